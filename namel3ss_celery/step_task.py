"""What ``n3.step.<target>`` does on a worker: check the message, start (or not), run, retry, file, decide.

Around the step itself: the pool's ``allowed_tools`` and ``allowed_agents``, at_least_once's bound on
redelivery, sticky keys forwarded to their worker, ``retry_local``, dead
letters, and steps requeued from a dead-letter queue. Filing an outcome and
what follows it (settling, feeding, launching) is the conductor's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.app.task import Context
from celery.exceptions import Ignore, NotRegistered
from celery.utils.nodenames import WORKER_DIRECT_EXCHANGE, worker_direct
from kombu.messaging import Producer

from .compiler.steps import message_expiry
from .conductor import ROUTING_KEYS, Conductor
from .dead_letters import broker_dead_letters_itself, publish_dead_letter
from .errors import RoutingError, UnknownRun
from .registry import STEP_TASK_PREFIX, StepDef
from .results import RunStatus
from .routing.allowed import refusal
from .worker.control import BlockControl, Decision
from .worker.nodes import retry_delay
from .worker.runner import StepOutcome, call_step, check_payload, describe

logger = logging.getLogger("namel3ss_celery")

PING_TIMEOUT = 1.0  # seconds a sticky key's worker has to answer before another worker takes the key
ALIVE_FOR = 10.0  # seconds a worker's answer is trusted
DRAIN_LIMIT = 10_000  # steps moved out of a dead worker's direct queue at one take-over


class StepHandler:
    """Runs steps for one worker process. ``pool`` is ``"prefork"`` inside a prefork child (set at its start);
    ``pool_name``, ``allowed_tools`` and ``allowed_agents`` are those of the worker pool it serves, if any."""

    def __init__(self, conductor: Conductor) -> None:
        self.conductor = conductor
        self.pool = "other"
        self.allowed_tools: tuple[str, ...] = ()  # empty: any target
        self.allowed_agents: tuple[str, ...] = ()
        self.queue: str | None = None  # the pool's queue
        self.direct = False  # this worker consumes its own direct queue (where sticky keys are forwarded)
        self.pool_name: str | None = None
        self._answered: dict[str, float] = {}  # worker node -> until when its last ping answer counts
        self._unsticky: set[str] = set()  # sticky pools this process has warned it cannot keep keys for

    def run(self, task: Any, definition: StepDef, payload: Any) -> Any:
        """The body of ``n3.step.<target>``: start (or not), run, file, decide; raise so Celery records a FAILURE."""
        request = task.request
        try:
            payload = check_payload(payload, definition)
            kind = str(payload["step"].get("kind", "tool"))
            refused = refusal(str(self.pool_name), kind, definition.target, self.allowed_tools, self.allowed_agents)
            if refused is not None:
                raise RoutingError(refused)
        except Exception as exc:
            if isinstance(payload, dict) and set(payload) >= ROUTING_KEYS:
                if not payload.get("requeued_from"):
                    request.n3_after = self.conductor.file(
                        payload, _refused(payload, exc, request.hostname, request.id)
                    )
                self._dead_letter(task, payload, describe(exc))
            raise
        if payload.get("requeued_from"):
            return self._run_again(task, definition, payload)
        if payload.get("sticky") and self._forwarded(task, payload["sticky"]):
            raise Ignore()  # its key belongs to another worker, which now has it
        control = BlockControl(self.conductor.store, payload["run"], payload["node"], payload.get("deadline"))
        try:
            if payload.get("deliveries"):
                self._bound_redelivery(task, payload)
            may_run = control.start(payload["i"], request.hostname or "", self.pool, os.getpid(), request.id or "")
        except UnknownRun:
            logger.warning("step %s of run %s dropped: the run's record expired", payload["key"], payload["run"])
            raise Ignore() from None
        if not may_run:
            self._skip(task, payload, control)
        worker, task_id = request.hostname or "", request.id or ""
        outcome = call_step(definition, payload, worker=worker, task_id=task_id, should_stop=control.stop_requested)
        self._retry_if_due(task, payload, outcome, stopping=control.stop_requested)
        if outcome.status == "failed" and payload.get("retry_local") and not control.stop_requested():
            # failure_mode retry_local: its remote retries are spent; once more, here, before it counts as failed.
            logger.info(
                "step %s of run %s failed on every retry; trying it once more here", payload["key"], payload["run"]
            )
            outcome = call_step(definition, payload, worker=worker, task_id=task_id, should_stop=control.stop_requested)
        if outcome.status == "cancelled" and control.stop_requested():
            # Stopped on purpose (its block was decided, or the run cancelled): REVOKED, not a FAILURE.
            follow_up = self.conductor.file(payload, outcome)
            task.backend.mark_as_revoked(request.id, "stopped: its block no longer needed it", request=request)
            self.conductor.follow_up(follow_up)
            raise Ignore()
        # Follow-ups run in after_return, once Celery has stored this task's own state.
        request.n3_after = self.conductor.file(payload, outcome)
        if outcome.exception is not None:
            self._dead_letter(task, payload, outcome.error or describe(outcome.exception))
            raise outcome.exception
        return outcome.result

    def _run_again(self, task: Any, definition: StepDef, payload: dict[str, Any]) -> Any:
        """A step requeued from a dead-letter queue: it runs on its own (its block ended long ago) and its
        result is this task's; it retries as before and, failing for good, is dead-lettered again."""
        request = task.request
        outcome = call_step(definition, payload, worker=request.hostname or "", task_id=request.id or "")
        self._retry_if_due(task, payload, outcome)
        if outcome.exception is not None:
            self._dead_letter(task, payload, outcome.error or describe(outcome.exception))
            raise outcome.exception
        return outcome.result

    def _retry_if_due(
        self, task: Any, payload: dict[str, Any], outcome: StepOutcome, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        """Raise Celery's ``Retry`` when a failed step has retries left (its task queue's backoff, or the block's)
        and its block is not ``stopping``."""
        request, retries = task.request, int(payload.get("retries", 0))
        if outcome.status == "failed" and request.retries < retries and not stopping():
            countdowns = payload.get("countdowns") or []
            delay = countdowns[request.retries] if request.retries < len(countdowns) else retry_delay(request.retries)
            options: dict[str, Any] = {}
            expires = message_expiry(payload, time.time() + delay)  # it may wait as long again, after its delay
            if expires is not None:
                options["expires"] = datetime.fromtimestamp(expires, tz=timezone.utc)
            raise task.retry(exc=outcome.exception, countdown=delay, max_retries=retries, **options)

    def _dead_letter(self, task: Any, payload: dict[str, Any], error: str) -> None:
        """A step that failed for good, on a task queue with a ``dead_letter_queue``: see ``dead_letters``.

        A message that came through a worker's direct queue (sticky, worker_affinity) has no dead-letter
        exchange, so it is always copied; it is requeued to its pool's queue (sticky) or to that same
        direct queue (worker_affinity).
        """
        if not payload.get("dlq"):
            return
        delivery = task.request.delivery_info or {}
        came_from = str(delivery.get("routing_key") or "")
        own = worker_direct(task.request.hostname or "").name
        # Celery sends to a direct queue through the default exchange, with the queue's name as routing key.
        direct = delivery.get("exchange") == WORKER_DIRECT_EXCHANGE.name or came_from == own
        if direct or not broker_dead_letters_itself(self.conductor.app, bool(task.acks_late)):
            if direct:
                came_from = (self.queue or own) if payload.get("sticky") else own
            publish_dead_letter(self.conductor.app, task.request, task.name, payload, error, came_from)

    def _forwarded(self, task: Any, sticky: dict[str, str]) -> bool:
        """distribution_policy sticky: the first worker to take a key keeps it. True when this step was sent on
        to the key's worker (its direct queue); a key whose worker no longer answers is taken over here."""
        me = task.request.hostname or ""
        if not self.direct:
            if sticky["pool"] not in self._unsticky:  # once per pool and process, not once per step
                self._unsticky.add(sticky["pool"])
                logger.warning(
                    "sticky steps of pool %s run here without keeping their keys: this worker does not consume "
                    "its direct queue (start it with --n3-pool or namel3ss-celery worker --pool)",
                    sticky["pool"],
                )
            return False
        owner = self.conductor.store.stick(sticky["pool"], sticky["key"], me, self.conductor.ttl)
        if owner == me:
            return False
        if not self._alive(owner):
            logger.warning(
                "sticky key %r of pool %s: worker %s does not answer; %s takes it",
                sticky["key"],
                sticky["pool"],
                owner,
                me,
            )
            self.conductor.store.stick(sticky["pool"], sticky["key"], me, self.conductor.ttl, take_over=True)
            self._drain(owner)
            return False
        task.signature_from_request(task.request, queue=worker_direct(owner)).apply_async()
        return True

    def _drain(self, dead: str) -> None:
        """Move the steps waiting in a dead worker's direct queue back to this pool's queue, where other
        workers take them (a step the dead worker had already taken comes back only when a worker with
        its node name starts again, or its block's timeout_seconds ends the block)."""
        if self.queue is None:
            return
        app = self.conductor.app
        with app.connection_for_write() as connection:
            channel = connection.channel()
            producer = Producer(channel)  # type: ignore[no-untyped-call]
            moved = 0
            try:
                source = worker_direct(dead)(channel)
                while moved < DRAIN_LIMIT and (message := source.get(no_ack=False)) is not None:
                    producer.publish(  # type: ignore[no-untyped-call]
                        message.body,
                        exchange="",
                        routing_key=self.queue,
                        headers=message.headers,
                        content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        priority=message.properties.get("priority"),
                    )
                    message.ack()
                    moved += 1
            except connection.channel_errors:  # its direct queue is gone: nothing waits there
                pass
            finally:
                channel.close()
        if moved:
            logger.warning("moved %d steps from %s's direct queue back to %s", moved, dead, self.queue)

    def _alive(self, node: str) -> bool:
        """Whether worker ``node`` answers a ping (a yes is remembered for ``ALIVE_FOR`` seconds)."""
        now = time.monotonic()
        if self._answered.get(node, 0.0) > now:
            return True
        if self.conductor.app.control.ping(destination=[node], timeout=PING_TIMEOUT):
            self._answered[node] = now + ALIVE_FOR
            return True
        return False

    def _bound_redelivery(self, task: Any, payload: dict[str, Any]) -> None:
        """at_least_once: a step whose message keeps coming back (its worker lost each time) fails for good."""
        request = task.request
        field = f"node:{payload['node']}:deliveries:{payload['i']}:{request.retries}"
        delivered = self.conductor.store.incr(payload["run"], field)
        if delivered > int(payload["deliveries"]):
            error = RoutingError(
                f"step {payload['key']!r} was delivered {delivered} times without finishing (its worker was lost "
                f"each time); at_least_once gives up after {payload['deliveries']}"
            )
            request.n3_after = self.conductor.file(payload, _refused(payload, error, request.hostname, request.id))
            self._dead_letter(task, payload, describe(error))
            raise error

    def _skip(self, task: Any, payload: dict[str, Any], control: BlockControl) -> None:
        """A step whose block is already decided (or run cancelled) never starts: REVOKED, not_started."""
        request = task.request
        decided_here = control.decision() is None and control.decide(
            control.overdue() or Decision(RunStatus.CANCELLED, None, "run cancelled")
        )  # the run was cancelled, or the deadline passed: the block ends so, and this step settles it
        now = time.time()
        outcome = StepOutcome(
            payload["key"],
            "cancelled",
            None,
            "not started: its block was already decided",
            None,
            now,
            now,
            request.hostname or "",
            request.id or "",
            "not_started",
        )
        follow_up = self.conductor.file(payload, outcome, keep=True)
        task.backend.mark_as_revoked(request.id, "block already decided", request=request)
        self.conductor.follow_up(("decided", payload["run"], payload["node"]) if decided_here else follow_up)
        raise Ignore()

    def refuse_unknown(self, name: str, task_id: str, message: Any) -> None:
        """A worker got ``n3.step.<target>`` it has no task for: fail that step so its block still ends."""
        args, _kwargs, embed = message.decode()
        payload = args[0] if args and isinstance(args[0], dict) else None
        if payload is None or not set(payload) >= ROUTING_KEYS:
            return
        exc = NotRegistered(name)
        error = (
            f"this worker has no task {name!r}: target {name[len(STEP_TASK_PREFIX) :]!r} is not registered here "
            "(or its module is not in NAMEL3SS_CELERY_STEP_MODULES)"
        )
        self.conductor.follow_up(
            self.conductor.file(payload, StepOutcome(payload["key"], "failed", None, error, exc, 0, 0, "", task_id))
        )
        if payload["join"] == "chord" and embed.get("chord"):
            headers = message.headers
            request = Context(
                id=task_id,
                group=headers.get("group"),
                group_index=headers.get("group_index"),
                chord=embed["chord"],
                errbacks=embed.get("errbacks"),
                delivery_info={},
            )
            self.conductor.app.backend.on_chord_part_return(request, states.FAILURE, exc)


def _refused(payload: dict[str, Any], exc: BaseException, worker: str | None, task_id: str | None) -> StepOutcome:
    return StepOutcome(payload["key"], "failed", None, describe(exc), exc, 0.0, 0.0, worker or "", task_id or "")
