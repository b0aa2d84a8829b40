"""Events on a Celery app: ``emit``, the adapter's announcements of its runs, and trigger matching.

An event goes to the deployment's stream (durable: ``stream``), then it is matched against the program's
triggers (``NAMEL3SS_CELERY_PROGRAM``; ``program_events``), which start what they name: on a worker
(``n3.events.match``, a Celery task per event), or, with ``match_events: emitter``, in the process that
publishes it when that process can. The adapter's own events are matched in the worker that announces them. A
trigger deduplicates and rate-limits with the store's clock (Redis TTLs), delays with a countdown, maps
the event into the run's context, and stops a loop: an event whose ancestry already holds ``MAX_DEPTH``
triggered runs starts nothing, and says so with a ``system_alert``. The process that emits an event that a
``sync`` trigger matches waits for that run, and hands back its result (``execution``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..engine.patience import PATIENCE, patiently
from ..engine.runner import current_step
from ..errors import StoreUnavailable
from ..plan.model import Plan
from ..registry import EVENT_HANDLE_TASK, Registry
from ..settings import MATCH_ON_WORKERS, MATCH_WHERE_EMITTED
from ..spec import ProgramSpec
from . import lifecycle
from .celery_events import CeleryEvents
from .handlers import Handler
from .matching import MAX_DEPTH, Trigger, matching
from .model import Event, EventPriority, EventType, emitted_event
from .program_events import ProgramEvents
from .stream import STORE_AWAY, EventStore, event_store, follow
from .triggering import WAITED, TriggerFiring
from .waiting import in_worker, wait_for, wait_matched, waited_triggers
from .watched import ANY_TYPE, WatchedTypes

logger = logging.getLogger("namel3ss_celery")

OUTAGES = (StoreUnavailable, *STORE_AWAY)  # the coordination store's and the event store's outages

MATCH_TASK = "n3.events.match"


class EventService:
    """Events for one ``Namel3ssCelery``.

    Args:
        app: its Celery app.
        store_url: where the event store is (the coordination store's URL, or ``memory://``), asked on first use.
        program_file: the program whose triggers this process matches (``NAMEL3SS_CELERY_PROGRAM``), if any.
        plan: ``Namel3ssCelery.plan`` (a trigger's target is planned once, then published per event).
        publish: ``Namel3ssCelery.publish``.
        registry: where handlers' ``transform_function`` steps are found.
        run_context: a run's initial context (to carry a triggered run's depth into what its steps emit).
        run: ``Namel3ssCelery.run`` (the handle of a run a ``sync`` trigger started on a worker).
        match_events: where the events emitted here are matched (``Settings.match_events``).
        patience: seconds a run's announcement is tried again while the stores do not answer
            (``Settings.store_patience``).
    """

    def __init__(
        self,
        app: Any,
        store_url: Callable[[], str],
        program_file: str | None,
        plan: Callable[..., Plan],
        publish: Callable[..., Any],
        registry: Registry,
        run_context: Callable[[str], dict[str, Any] | None],
        run: Callable[[str], Any],
        match_events: str = MATCH_ON_WORKERS,
        patience: float = PATIENCE,
    ) -> None:
        self.app = app
        self._store_url = store_url
        self._store_made: EventStore | None = None
        self._plan = plan
        self._publish = publish
        self.registry = registry
        self._run_context = run_context
        self._run = run
        self.match_here = match_events == MATCH_WHERE_EMITTED
        self.patience = patience
        self.before_publish: Callable[[], None] = lambda: None  # the embedded worker starts here
        self._lock = threading.RLock()
        self.watched = WatchedTypes(app, self._store)
        self.programs = ProgramEvents(program_file, plan, self.watched)
        self.firing = TriggerFiring(app, self._store, publish, self.programs.target_plan)
        self.celery_events = CeleryEvents(app)

    def __call__(self, after: str = "$", poll: float = 1.0) -> Iterator[tuple[str, Event]]:
        """``n3.events(...)``: the same as ``events``."""
        return self.events(after, poll)

    def store(self) -> EventStore:
        """The event store (see ``events.stream``), made on first use."""
        return self._store()

    def _store(self) -> EventStore:
        if self._store_made is None:
            with self._lock:
                if self._store_made is None:
                    self._store_made = event_store(self._store_url())
        return self._store_made

    def close(self) -> None:
        """Close the event store's connections."""
        if self._store_made is not None:
            self._store_made.close()
            self._store_made = None

    def use_program(self, program: ProgramSpec | str | Path | Mapping[str, Any]) -> None:
        """Match events against ``program``'s triggers in this process (``ProgramEvents.use``).

        Raises:
            SpecError: the program, or one of its triggers, is invalid.
        """
        self.programs.use(program)

    def step_done(self, message: Any, outcome: Any) -> None:
        """Announce ``task_completed`` or ``task_failed`` for a step a worker ran (``NAMEL3SS_CELERY_STEP_EVENTS``)."""
        self.announce(lifecycle.step_done(message, outcome))

    def block_moved(self, run_id: str, plan: Plan, node: str, result: Any) -> None:
        """Announce ``block_started`` (``result`` None) or ``block_completed`` of a workflow's node (the node's
        next nodes launch after)."""
        self._announce_patiently(
            lambda: lifecycle.block_moved(run_id, plan, node, result, self._run_context(run_id)),
            f"announcing block {node} of run {run_id}",
        )

    def run_ended(self, run_id: str, plan: Plan, final: Any) -> None:
        """Announce the one ``workflow_completed`` of a run (the engine calls it once per run): the run has
        ended, and this event is the only word of it that triggers hear. Announced again after a failure half
        way, it is still one event (``lifecycle.ONCE``)."""
        self._announce_patiently(
            lambda: lifecycle.run_ended(run_id, plan, final, self._run_context(run_id)),
            f"announcing the end of run {run_id}",
        )

    def _announce_patiently(self, event: Callable[[], Event], what: str) -> None:
        """``announce`` the event ``event()`` makes, both tried again while a store does not answer, for up to
        ``patience`` seconds (``engine.patience``)."""
        patiently(lambda: self.announce(event()), what, self.patience, away=OUTAGES)

    # --- publishing -------------------------------------------------------------

    def emit(
        self,
        kind: str | EventType,
        data: Mapping[str, Any] | None = None,
        *,
        source: str = "application",
        correlation_id: str | None = None,
        priority: int = EventPriority.NORMAL,
    ) -> Event:
        """Publish a ``custom``, ``webhook``, ``message``, ``dataset_change``, ``manual``, ``user_input`` or
        ``system_alert`` event; it is matched against the program's triggers on the workers, or here with
        ``match_events: emitter`` (``publish``). The event is returned; a ``sync`` trigger's run result is
        in its ``results``, by trigger name.

        Raises:
            SpecError: an unknown or adapter-only type, data that is not a mapping of JSON data, a bad
                priority (nothing was published).
            ConfigurationError: a ``sync`` trigger matches the event, and this process may not wait for its
                run: it runs a step or a Celery task (nothing was published).
            WaitTimeout: a ``sync`` trigger's run did not end within its ``sync_timeout_seconds`` (or no
                worker matched the event by then); the event is in the stream and the run goes on.
            Exception: what the matching worker raised, for a ``sync`` trigger; matched here, what starting a
                triggered run raised (``StoreUnavailable``,
                ``BrokerUnavailable``, ...); the event is in the stream, and the triggers matched before
                that one have started their runs.
        """
        event = self.event(kind, data, source=source, correlation_id=correlation_id, priority=priority)
        self.publish(event)
        return event

    def event(
        self,
        kind: str | EventType,
        data: Mapping[str, Any] | None = None,
        *,
        source: str = "application",
        correlation_id: str | None = None,
        priority: int = EventPriority.NORMAL,
    ) -> Event:
        """The event ``emit`` would publish, checked, not published (``integrations.django.emit_on_commit``
        publishes it at the commit).

        Raises:
            SpecError: as ``emit``.
        """
        return emitted_event(kind, data, source=source, correlation_id=correlation_id, priority=priority)

    def publish(self, event: Event) -> str:
        """Put ``event`` (checked already) in the stream and match it; its stream id. It is matched on the
        workers (``n3.events.match``, a task per event), or here when ``match_events`` is ``"emitter"`` and
        this process has the program's triggers or handlers for its type and can start what the triggers name
        (one hop less to the run it starts). Its depth is set here: one more than the triggered run whose
        step publishes it. When ``sync`` triggers of this process's program match it, this waits for their
        runs, and puts their results in ``event.results`` (see ``emit`` for what it raises)."""
        event.metadata["depth"] = max(int(event.metadata.get("depth", 0)), self._depth_here())
        waited = waited_triggers(self.triggers(), event)
        self.before_publish()
        if self.match_here and self._matches_here(event):
            return self._publish_matching_here(event)
        if waited:
            event.metadata[WAITED] = sorted(waited)
        stream_id = self._store().append(event)
        sent = self.app.signature(MATCH_TASK, args=(event.to_dict(),)).apply_async(ignore_result=not waited)
        if waited:
            event.results.update(wait_matched(sent, event.event_id, waited, self._run))
        return stream_id

    def _publish_matching_here(self, event: Event) -> str:
        """``publish``, matching ``event`` in this process: its triggers' dedup claims are made with its
        append (one trip), and given back when an error keeps a trigger from acting on it."""
        claims = self.firing.dedupe_claims(matching(self.triggers(), event), event)
        stream_id, won = self._store().append_claiming(event, list(claims.values()))
        pending = dict(zip(claims, won, strict=True))  # each trigger takes its own as it is reached
        waits: list[tuple[str, float, Any]] = []
        try:
            self.match(event, claimed=pending, waits=waits)
        except BaseException:
            self.firing.release([claims[path][0] for path, claimed in pending.items() if claimed])
            raise
        event.results.update(wait_for(waits))
        return stream_id

    def announce(self, event: Event, in_stream: bool = False) -> None:
        """An event of the adapter's own (a run started or ended): to the stream (unless it is there already:
        a run's ``workflow_started``, written with its record), then matched here when this process has
        triggers for it, or on a worker when some worker's triggers listen to its type. It goes to Celery's
        event system too, where this process sends task events (``celery_events``)."""
        store = self._store()
        if in_stream:
            self.celery_events.send(event)
        elif not event.metadata.get(lifecycle.ONCE):
            store.append(event)
            self.celery_events.send(event)
        elif store.append_once(event) is not None:
            self.celery_events.send(event)
        else:  # announced again (a resumed settle): matched again in case the first did not get that far
            logger.info("event %s (%s) announced again", event.event_id, event.event_type)
        if (self.match_here or in_worker()) and self._matches_here(event):
            self.match(event)
        elif {str(event.event_type), ANY_TYPE} & self.watched.read():
            self.app.signature(MATCH_TASK, args=(event.to_dict(),)).apply_async(ignore_result=True)

    def _matches_here(self, event: Event) -> bool:
        """Whether ``event`` is matched in this process: its program has triggers or handlers of the event's
        type, and this process can start what the triggers name."""
        kind = str(event.event_type)
        return (
            any(t.event_type == event.event_type for t in self.triggers())
            or any(h.handles(kind) for h in self.handlers())
        ) and self.programs.starts_here()

    def events(self, after: str = "$", poll: float = 1.0) -> Iterator[tuple[str, Event]]:
        """The deployment's events after the stream id ``after`` (``"$"``: from now on; ``"0"``: the oldest
        kept), as they arrive, each with its id: give the last one back as ``after`` to resume there."""
        return follow(self._store(), after, poll)

    def _depth_here(self) -> int:
        """How many triggered runs lead to this event: one more than the run whose step emits it."""
        step = current_step()
        if step is None:
            return 0
        context = self._run_context(step[0]) or {}
        trigger = context.get("trigger_event")
        return int(trigger.get("metadata", {}).get("depth", 0)) + 1 if isinstance(trigger, Mapping) else 0

    # --- matching --------------------------------------------------------

    def program(self) -> ProgramSpec | None:
        """The program whose triggers this process matches."""
        return self.programs.program()

    def triggers(self) -> list[Trigger]:
        """This process's program's event triggers, compiled once (and its event types marked watched)."""
        return self.programs.triggers()

    def handlers(self) -> list[Handler]:
        """This process's program's event handlers, compiled once."""
        return self.programs.handlers()

    def match(
        self,
        event: Event,
        claimed: dict[str, bool] | None = None,
        waits: list[tuple[str, float, Any]] | None = None,
        delivered_again: bool = False,
    ) -> dict[str, str]:
        """Start what ``event`` triggers, and hand it to each handler of its type (a task each); what became
        of each trigger, by name (a run id, or why not: ``triggering.DROPPED``). ``claimed``: the
        deduplication claims made already, by trigger path (``publish``); each is taken out as its trigger is
        reached. ``waits``: where the emitting process, matching here, collects the runs of ``sync`` triggers
        to wait for. Matched on a worker, a ``sync`` trigger starts its run only when the event names it as
        waited for by its emitter (``WAITED``). ``delivered_again``: this matching may be a repeat (the match
        task, delivered again after its worker was lost): each trigger and handler acts on the event once."""
        program = self.programs.program()
        if program is None:
            return {}
        for handler in self.handlers():
            if (
                handler.handles(str(event.event_type))
                and int(event.metadata.get("depth", 0)) < MAX_DEPTH
                and self.firing.first_time(f"handled:{handler.spec.name}", event, delivered_again)
            ):
                self.app.signature(EVENT_HANDLE_TASK, args=(handler.spec.name, event.to_dict(), 0)).apply_async(
                    ignore_result=True
                )
        made = {} if claimed is None else claimed
        waited = set(event.metadata.get(WAITED) or ())  # the sync triggers whose runs the emitter waits for
        return {
            t.spec.name: self.firing.fire(
                program, t, event, made.pop(t.path, None), waits, t.spec.name in waited, delivered_again
            )
            for t in matching(self.triggers(), event)
        }

    def handle(self, name: str, event: Event) -> list[str]:
        """Handler ``name`` on ``event``: transform, route, start each target; the runs' ids.

        Raises:
            Exception: whatever the transform or a dispatch raised (the task retries, then dead-letters).
        """
        program = self.programs.program()
        (handler,) = [h for h in self.handlers() if h.spec.name == name]
        data = handler.transform(event, self.registry)
        routed = event.to_dict() | {"data": dict(data)}
        runs = []
        nodes = {w.name for w in program.workflows} | {b.name for b in program.parallel_blocks} if program else set()
        for target in handler.targets(routed):
            context = {"trigger_event": routed, "event_handler": name}
            if program is not None and target in nodes:
                handle = self._publish(self.programs.target_plan(program, target), context)
            else:  # a step target: one step, whose payload is the (transformed) data
                step = {k: v for k, v in data.items() if k not in ("name", "target")} | {"target": target}
                handle = self._publish(self._plan({"name": f"handler_{name}", "steps": [step]}), context)
            runs.append(str(handle.id))
        return runs

    def start_delayed(self, program: ProgramSpec, name: str, context: dict[str, Any]) -> str:
        """A delayed trigger's run, once per trigger and event (``TriggerFiring.start_delayed``)."""
        return self.firing.start_delayed(program, name, context)

    def alert(self, kind: EventType, data: dict[str, Any], correlation_id: str | None = None) -> None:
        """Put an event of the adapter's in the stream that starts nothing (it is at the depth limit)."""
        self.firing.alert(kind, data, correlation_id)

    @property
    def counts(self) -> dict[str, int]:
        """What matching did in this process: dispatched, delayed, duplicate, rate_limited, loop, sync_not_waited."""
        return self.firing.counts
