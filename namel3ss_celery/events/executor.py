"""The Namel3ss event runtime's API on Celery: ``EventDrivenExecutor`` and its event buses.

Events go to the deployment's stream (``events.stream``), so a handler registered in one process receives
the events published in any process of the deployment, workers included: ``start()`` follows the stream
from that moment in a thread of this process, and hands each event to the handlers whose types and
filters it matches (``async`` handlers run on an event loop of that thread). A workflow registered with
``register_workflow_trigger`` runs on Celery workers, as the parallel block ``event_workflow_<name>``,
with the event in its context; its end is the one ``workflow_completed`` event the adapter announces
for every run (``workflow_name`` the name it was registered under, ``instance_id`` the run's id). A
workflow's runs are claimed in the event store, one per event however many processes register it, and
the last event it handled is marked there, so one registered again after a restart misses nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import SpecError
from ..plan.fields import STREAM_TTL
from .buses import EventBus, EventHandler, MemoryEventBus, parse_types
from .model import Event, EventPriority, EventType
from .server import serve
from .stream import STORE_AWAY, stream_order

logger = logging.getLogger("namel3ss_celery")

FOLLOW_POLL = 0.2  # seconds a read of the stream waits before the follower looks at stop() again
RETRY_AFTER = 1.0  # seconds the follower waits for a store that did not answer before it tries again


class EventDrivenExecutor:
    """Event-triggered workflows and event handlers (the Namel3ss ``EventDrivenExecutor``).

    Args:
        event_bus: ``MemoryEventBus()`` (the default) or ``RedisEventBus(url)``; its ``n3`` when set.
        enable_websocket: also serve the stream over WebSocket (``events.server``) on ``websocket_host``
            and ``websocket_port`` while started.
        n3: the ``Namel3ssCelery`` to publish and dispatch with (``runtime`` makes one from the bus).
    """

    def __init__(
        self,
        event_bus: EventBus | None = None,
        enable_websocket: bool = True,
        websocket_host: str = "localhost",
        websocket_port: int = 8765,
        *,
        n3: Any = None,
    ) -> None:
        self.event_bus = event_bus or MemoryEventBus()
        self.n3 = n3 or self.event_bus.n3
        if self.n3 is None:
            raise SpecError("an EventDrivenExecutor needs a Namel3ssCelery: use runtime.get_event_executor()", "n3")
        self.enable_websocket = enable_websocket
        self.websocket_host = websocket_host
        self.websocket_port = websocket_port
        self.handlers: dict[str, EventHandler] = {}
        self.trigger_names: dict[str, str] = {}  # a workflow trigger's handler id: its workflow's name
        self.event_workflows: dict[str, dict[str, Any]] = {}
        self.workflow_instances: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {
            "workflows_registered": 0,
            "workflows_triggered": 0,
            "events_published": 0,
            "events_handled": 0,
            "handler_failures": 0,
            "websocket": "off",
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the stream from now on (handlers see what is published after this), and serve it. A workflow
        registered before ``start()`` is first handed the events published since its last mark (see
        ``register_workflow_trigger``)."""
        if self._threads:
            return
        store = self.n3.events.store()
        after = await asyncio.to_thread(store.newest)
        with self._lock:
            triggers = dict(self.trigger_names)
        marks = {h: m for h, name in triggers.items() if (m := await asyncio.to_thread(store.marked, reader(name)))}
        self._stop.clear()
        follower = threading.Thread(target=self._follow, args=(after, marks), name="n3-event-handlers", daemon=True)
        follower.start()
        self._threads.append(follower)
        if self.enable_websocket:
            server = threading.Thread(target=self._serve, name="n3-event-websocket", daemon=True)
            server.start()
            self._threads.append(server)

    async def stop(self) -> None:
        """Stop following and serving (handlers running now finish)."""
        self._stop.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self._threads.clear()

    # --- publishing and registering --------------------------------------------------------

    async def publish_event(
        self,
        event_type: EventType | str,
        source: str,
        data: dict[str, Any],
        priority: EventPriority = EventPriority.NORMAL,
        correlation_id: str | None = None,
    ) -> str:
        """Publish an event to the deployment; its id.

        Raises:
            SpecError: an unknown event type (Namel3ss made it ``custom``), or data that is not JSON.
        """
        kind = parse_types([event_type]).pop()
        level = EventPriority(int(priority))
        event = Event.new(kind, source, dict(data), priority=level, correlation_id=correlation_id)
        await asyncio.to_thread(self.n3.events.publish, event)
        self.stats["events_published"] += 1
        return event.event_id

    async def register_event_handler(
        self,
        event_types: list[EventType | str] | EventType | str,
        handler_func: Callable[[Event], Any],
        filters: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> str:
        """Call ``handler_func(event)`` (sync or ``async``) for each event of ``event_types`` (a list, or one
        type) whose data (or metadata) fields equal ``filters``, published anywhere in the deployment after
        ``start()``; the subscription's id. Higher ``priority`` handlers are called first."""
        handler = EventHandler(uuid.uuid4().hex, parse_types(event_types), handler_func, priority, dict(filters or {}))
        with self._lock:
            self.handlers[handler.handler_id] = handler
        return handler.handler_id

    async def register_workflow_trigger(
        self,
        workflow_name: str,
        trigger_event_type: EventType | str,
        workflow_config: dict[str, Any],
        filters: dict[str, Any] | None = None,
    ) -> None:
        """On each event of ``trigger_event_type`` (matching ``filters``), run ``workflow_config`` (``steps``,
        ``strategy``, ``max_concurrency``, ``timeout_seconds``, ``context``) on Celery workers as the block
        ``event_workflow_<workflow_name>``, with ``trigger_event`` and ``workflow_instance_id`` in its
        context. The block is checked now (its targets too).

        One run per event and workflow name in the deployment: each run is claimed in the event store first,
        so processes that register the same workflow share its events rather than each starting a run. The
        last event handled is marked in the store under the workflow's name: ``start()`` in a later process
        (after a restart, say) first hands the workflow the matching events published since then.

        Raises:
            SpecError, CompileError: the workflow's block is invalid.
        """
        block = _event_block(workflow_name, workflow_config)
        self.n3.plan(block)  # refused now, not at the first event
        given = {"trigger_event_type": trigger_event_type, "workflow_config": workflow_config}
        self.event_workflows[workflow_name] = given | {"filters": dict(filters or {})}

        def trigger(event: Event) -> None:
            self._run_event_workflow(workflow_name, block, workflow_config, event)

        handler_id = await self.register_event_handler([trigger_event_type], trigger, filters)
        with self._lock:
            self.trigger_names[handler_id] = workflow_name
        self.stats["workflows_registered"] += 1

    def get_stats(self) -> dict[str, Any]:
        """Counts, in the Namel3ss shape (``event_driven_executor``, ``event_bus``, ...)."""
        return {
            "event_driven_executor": dict(self.stats),
            "event_bus": {
                "kind": type(self.event_bus).__name__,
                "handlers": len(self.handlers),
                "matching": dict(self.n3.events.counts),
            },
            "workflow_instances": len(self.workflow_instances),
            "registered_workflows": len(self.event_workflows),
        }

    # --- in the follower thread ---------------------------------------------------------------

    def _run_event_workflow(self, name: str, block: dict[str, Any], config: Mapping[str, Any], event: Event) -> None:
        store = self.n3.events.store()
        claim = f"{reader(name)}:{event.event_id}"
        if not store.claim(claim, STREAM_TTL):
            return  # started by another process of the deployment (or by this workflow before a restart)
        run_id = uuid.uuid4().hex
        context = {
            "trigger_event": event.to_dict(),
            "workflow_instance_id": run_id,
            "event_workflow": name,
            **dict(config.get("context") or {}),
        }
        try:
            self.n3.publish(self.n3.plan(block), context, run_id=run_id)
        except BaseException:
            store.release([claim])  # not started: the event is for whoever handles it next
            raise
        self.workflow_instances[run_id] = {"workflow_name": name, "trigger_event_id": event.event_id}
        self.stats["workflows_triggered"] += 1

    def _follow(self, after: str, marks: Mapping[str, str]) -> None:
        """The follower thread: the workflows' catch-up, then every event as it arrives. A store that does not
        answer (Redis restarting) is waited for, ``RETRY_AFTER`` seconds at a time, and reading goes on from the
        last event handled: nothing is skipped."""
        loop = asyncio.new_event_loop()
        store = self.n3.events.store()
        behind, away = dict(marks), False
        try:
            while not self._stop.is_set():
                try:
                    for handler_id in list(behind):
                        self._catch_up(loop, store, handler_id, behind[handler_id], after)
                        del behind[handler_id]
                    batch = store.read(after, count=100, block=FOLLOW_POLL)
                except STORE_AWAY as exc:
                    if not away:
                        logger.warning("the event stream cannot be read (%s); trying again every %gs", exc, RETRY_AFTER)
                    away = True
                    self._stop.wait(RETRY_AFTER)
                    continue
                if away:
                    logger.warning("the event stream can be read again; going on after event %s", after)
                    away = False
                for stream_id, event in batch:
                    after = stream_id
                    with self._lock:
                        chosen = sorted(
                            (h for h in self.handlers.values() if h.matches(event)), key=lambda h: -h.priority
                        )
                    for handler in chosen:
                        self._call(loop, handler, event)
                if batch:
                    try:
                        self._mark(store, after)
                    except STORE_AWAY:  # marked with the next batch; a restart before it hands this one again
                        logger.warning("could not mark event %s as handled; the next batch will", after)
        finally:
            loop.close()

    def _catch_up(self, loop: asyncio.AbstractEventLoop, store: Any, handler_id: str, mark: str, until: str) -> None:
        """Hand one workflow trigger the events after its mark up to ``until`` (where the live follower starts)."""
        last = stream_order(until)
        while not self._stop.is_set():
            batch = [(i, e) for i, e in store.read(mark, count=100) if stream_order(i) <= last]
            if not batch:
                return
            for stream_id, event in batch:
                handler = self.handlers.get(handler_id)
                if handler is not None and handler.matches(event):
                    self._call(loop, handler, event)
                mark = stream_id
            store.mark(reader(self.trigger_names[handler_id]), mark)

    def _mark(self, store: Any, stream_id: str) -> None:
        with self._lock:
            names = set(self.trigger_names.values())
        for name in names:
            store.mark(reader(name), stream_id)

    def _call(self, loop: asyncio.AbstractEventLoop, handler: EventHandler, event: Event) -> None:
        try:
            value = handler.handler_func(event)
            if inspect.isawaitable(value):
                loop.run_until_complete(value)
            self.stats["events_handled"] += 1
        except Exception:  # noqa: BLE001 - one handler's failure is logged and counted; the others go on
            self.stats["handler_failures"] += 1
            logger.exception("event handler %s failed on event %s", handler.handler_id, event.event_id)

    def _serve(self) -> None:
        async def until_stopped() -> None:
            stop = asyncio.Event()
            serving = asyncio.ensure_future(
                serve(self.n3.events.store(), self.websocket_host, self.websocket_port, stop=stop)
            )
            while not self._stop.is_set() and not serving.done():
                await asyncio.sleep(FOLLOW_POLL)
            stop.set()
            await serving

        try:
            self.stats["websocket"] = f"ws://{self.websocket_host}:{self.websocket_port}/events"
            asyncio.run(until_stopped())
        except OSError as exc:  # the port is taken: said in the log and in get_stats(), not silently
            self.stats["websocket"] = f"not serving: {exc}"
            logger.warning(
                "the event stream is not served over WebSocket on %s:%d: %s",
                self.websocket_host,
                self.websocket_port,
                exc,
            )


def reader(workflow_name: str) -> str:
    """The name a workflow trigger registered through this API reads the stream under (its claims and mark)."""
    return f"api:{workflow_name}"


def _event_block(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": f"event_workflow_{name}",
        "steps": list(config.get("steps", [])),
        "strategy": config.get("strategy", "all"),
        "max_concurrency": config.get("max_concurrency", 5),
        "timeout_seconds": config.get("timeout_seconds", 300),
    }
