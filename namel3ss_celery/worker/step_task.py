"""What ``n3.step.<target>`` does on a worker: read the message, start (or not), run, retry, file, decide.

Around the step itself: the pool's ``allowed_tools`` and ``allowed_agents``, at_least_once's bound on
redelivery, sticky keys forwarded to their worker, ``retry_local``, dead letters, and steps requeued
from a dead-letter queue. Filing an outcome and what follows it (settling, feeding, launching) is the
engine's (``engine.conductor``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.exceptions import Ignore, Reject
from kombu.exceptions import OperationalError

from ..engine.conductor import Conductor
from ..engine.control import delivery_of
from ..engine.filing import FollowUp
from ..engine.lost import held
from ..engine.patience import patiently
from ..engine.ports import Held
from ..engine.retry import retry_countdown
from ..engine.runner import StepOutcome, call_step
from ..engine.settle import RACING
from ..engine.values import describe
from ..errors import RoutingError, StepLost, StoreUnavailable, UnknownRun, UnknownTarget
from ..plan import fields
from ..plan.message import StepMessage
from ..registry import StepDef
from ..results import TaskStatus
from ..routing.allowed import refusal
from ..tracing import annotate, event, recording, span
from .dead_letters import dead_letter_step
from .late_filing import LateFiler
from .sticky import StickyKeys
from .watchdog import INCARNATION

logger = logging.getLogger("namel3ss_celery")

CONTEXTS_KEPT = 16  # stored contexts a worker process keeps (one per node of the runs it works on)


def revoked(task: Any, reason: str, keep_ended: bool = False) -> None:
    """End a step that was stopped or never started as REVOKED: in the result backend, and for Flower and
    ``celery events``, which saw it start and would otherwise show it ``STARTED`` for ever (``Ignore``,
    raised next, ends the task without an event). The event goes out only where the task sends events.
    ``keep_ended``: a final state the result backend already holds for this task (an earlier delivery of
    the same message ended it) stays."""
    request = task.request
    if not (keep_ended and task.backend.get_state(request.id) in states.READY_STATES):
        task.backend.mark_as_revoked(request.id, reason, request=request)
    if task.send_events:
        try:
            task.send_event("task-revoked", retry=False, terminated=False, signum=None, expired=False)
        except (OperationalError, *task.app.connection_for_write().connection_errors) as exc:  # read on error only
            logger.warning("could not send task-revoked for %s: %s", request.id, exc)


class StepHandler:
    """Runs steps for one worker process. ``pool`` is ``"prefork"`` inside a prefork child (set at its start);
    ``pool_name``, ``allowed_tools`` and ``allowed_agents`` are those of the worker pool it serves, if any."""

    def __init__(self, app: Any, conductor: Conductor) -> None:
        self.app = app
        self.conductor = conductor
        self.sticky = StickyKeys(app, lambda: conductor.store, conductor.ttl)
        self.pool = "other"
        self.allowed_tools: tuple[str, ...] = ()  # empty: any target
        self.allowed_agents: tuple[str, ...] = ()
        self.pool_name: str | None = None
        self._contexts: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()  # stored contexts, recent last
        self.on_step: Callable[[StepMessage, StepOutcome], None] | None = None  # told each step's outcome
        self.late = LateFiler(conductor.file, conductor.follow_up, give_up_after=conductor.ttl)

    def run(self, task: Any, definition: StepDef, payload: Any) -> Any:
        """The body of ``n3.step.<target>``: start (or not), run, file, decide; raise so Celery records a FAILURE.

        A step of a run whose record expired (before it started, or while it ran) is dropped: there is no
        run left to file it in.
        """
        with span("n3.step", target=definition.target):
            return self._traced_run(task, definition, payload)

    def _traced_run(self, task: Any, definition: StepDef, payload: Any) -> Any:
        try:
            return self._run(task, definition, payload)
        except UnknownRun as exc:
            logger.warning("step of run %s dropped: the run's record expired", exc.run_id)
            revoked(task, "its run's record expired")
            raise Ignore() from exc

    def _run(self, task: Any, definition: StepDef, payload: Any) -> Any:
        request = task.request
        worker, task_id = request.hostname or "", request.id or ""
        message = self._read(task, definition, payload)
        if message.requeued_from:
            return self._run_again(task, definition, message)
        if message.sticky is not None and self.sticky.forwarded(task, message.sticky):
            raise Ignore()  # its key belongs to another worker, which now has it
        control = self.conductor.control(message)
        if message.deliveries is not None:
            self._bound_redelivery(task, message)
        # Held in this process's name from its start guard until it is filed: filed for it, should this worker
        # stop answering or this process end first.
        holding = held(message, worker, self.conductor.ttl, os.getpid(), INCARNATION)
        delivery = delivery_of(task_id, request.retries)  # as worker.accepting names it
        try:
            may_run = patiently(
                lambda: control.start(message.index, worker, self.pool, os.getpid(), task_id, holding, delivery),
                f"starting step {message.key} of run {message.run}",
                self.conductor.patience,
            )
        except StoreUnavailable as exc:  # it did not run: a failure, filed when the store answers
            if message.deliveries is None:  # unless another copy of the step filed its own meanwhile
                failed = StepOutcome.failure(message.key, exc, worker=worker, task_id=task_id)
                self.late.hand_over(message, failed, holding, keep=True)
            raise
        annotate(run_id=message.run, node=message.node, step=message.key, strategy=str(message.strategy))
        if not may_run:
            annotate(outcome="not_started")
            skipped = self.conductor.skip(message, worker, task_id)
            if skipped.filed:  # REVOKED, as not_started
                revoked(task, "block already decided")
            else:  # a repeat delivery of a step whose block ended: what an earlier delivery stored stays
                revoked(task, "a repeat delivery: its block already ended", keep_ended=True)
            self.conductor.follow_up(skipped.follow_up)
            raise Ignore()
        outcome = call_step(definition, message, worker=worker, task_id=task_id, should_stop=control.asked_to_stop)
        outcome.attempts = int(request.retries or 0) + 1  # Celery counts the retries of this message
        annotate(outcome=str(outcome.outcome or outcome.status))
        # Whether to stop, asked so that a store that does not answer now is "go on": the outcome is filed then.
        self._retry_if_due(task, message, outcome, stopping=control.asked_to_stop, holding=holding)
        if outcome.status == TaskStatus.FAILED and message.retry_local and not control.asked_to_stop():
            # failure_mode retry_local: its remote retries are spent; once more, here, before it counts as failed.
            logger.info("step %s of run %s failed on every retry; trying it once more here", message.key, message.run)
            tries = outcome.attempts + 1
            outcome = call_step(definition, message, worker=worker, task_id=task_id, should_stop=control.asked_to_stop)
            outcome.attempts = tries
        if outcome.status == TaskStatus.CANCELLED and control.asked_to_stop():
            # Stopped on purpose (its block was decided, or the run cancelled): REVOKED, not a FAILURE.
            follow_up = self._file(message, outcome, holding)
            self._told(message, outcome)
            revoked(task, "stopped: its block no longer needed it")
            self.conductor.follow_up(follow_up)
            raise Ignore()
        if outcome.exception is not None:
            outcome.dead_letter = message.dlq  # _dead_letter, below, sends it there
        # Follow-ups run in after_return, once Celery has stored this task's own state.
        request.n3_after = self._file(message, outcome, holding)
        self._told(message, outcome)
        if message.strategy in RACING and recording():  # a traced race: did this step win it?
            decision = control.decision()
            if decision is not None and decision.winner == message.index:
                annotate(outcome="won")
        if outcome.exception is not None:
            self._dead_letter(task, message, outcome.error or describe(outcome.exception))
            raise outcome.exception
        return outcome.result

    def _file(self, message: StepMessage, outcome: StepOutcome, holding: Held | None) -> FollowUp | None:
        """File the step's outcome patiently; when the store stays down longer, file it later from this
        process (``late_filing``), or, under at_least_once, fail so that the step is delivered again.

        Raises:
            StoreUnavailable: under at_least_once, the store did not come back in time.
        """
        try:
            return self.conductor.file_patiently(message, outcome, held=holding)
        except StoreUnavailable:
            if message.deliveries is not None:
                raise
            self.late.hand_over(message, outcome, holding)
            return None

    def _told(self, message: StepMessage, outcome: StepOutcome) -> None:
        """Tell ``on_step`` (step events); its failure is logged: the step is filed whatever it does."""
        if self.on_step is None:
            return
        try:
            self.on_step(message, outcome)
        except Exception:  # noqa: BLE001 - the outcome is filed; an event that could not go out is only logged
            logger.exception("announcing step %s of run %s failed", message.key, message.run)

    def _read(self, task: Any, definition: StepDef, payload: Any) -> StepMessage:
        """The step message, checked against this worker: its target, its pool's allowed targets.

        A message that names its run and block but is refused fails that step (so its block still ends)
        and is dead-lettered; the error is raised for Celery to record.
        """
        request = task.request
        try:
            message = StepMessage.decode(payload)
            if message.target != definition.target:
                raise UnknownTarget(f"message for target {message.target!r} reached the task of {definition.target!r}")
            refused = refusal(
                str(self.pool_name), message.kind, definition.target, self.allowed_tools, self.allowed_agents
            )
            if refused is not None:
                raise RoutingError(refused)
            if message.context_ref is not None:
                message = replace(message, context=self._stored_context(message.run, message.context_ref))
        except Exception as exc:
            routed = StepMessage.routing(payload)
            if routed is not None:
                if not routed.requeued_from:
                    refusal_outcome = StepOutcome.failure(routed.key, exc, worker=request.hostname, task_id=request.id)
                    refusal_outcome.dead_letter = routed.dlq
                    request.n3_after = self.conductor.file(routed, refusal_outcome)
                self._let_go(routed, request.hostname or "")  # filed first: a hold landing later is refused
                self._dead_letter(task, routed, describe(exc))
            raise
        return message

    def _let_go(self, message: StepMessage, worker: str) -> None:
        """This process will not run ``message``: let go of the hold its worker took as it took the step
        (``worker.accepting``); a store that does not answer now leaves it to the watchdog, logged."""
        taken = held(message, worker, self.conductor.ttl, os.getpid(), INCARNATION)
        if taken is not None:
            self._let_go_held(message, taken)

    def _let_go_held(self, message: StepMessage, holding: Held) -> None:
        """Let go of ``holding``; a store that does not answer now leaves it to the watchdog, logged (what this
        process raises next is the step's own)."""
        try:
            self.conductor.store.release(holding.worker, holding.member)
        except Exception as exc:  # noqa: BLE001 - see above
            logger.warning("step %s of run %s: could not let go of its hold (%s)", message.key, message.run, exc)

    def _stored_context(self, run_id: str, node: str) -> dict[str, Any]:
        """A node's context stored once in the run's record (read once per node by this process).

        Raises:
            UnknownRun: the run's record is gone.
        """
        key = (run_id, node)
        if key not in self._contexts:
            (text,) = patiently(
                lambda: self.conductor.store.get_fields(run_id, [fields.node_context(node)]),
                f"reading the context of block {node} of run {run_id}",
            )
            if text is None:
                raise UnknownRun(run_id)
            self._contexts[key] = json.loads(text)
            while len(self._contexts) > CONTEXTS_KEPT:
                self._contexts.popitem(last=False)
        self._contexts.move_to_end(key)
        return dict(self._contexts[key])

    def _run_again(self, task: Any, definition: StepDef, message: StepMessage) -> Any:
        """A step requeued from a dead-letter queue: it runs on its own (its block ended long ago) and its
        result is this task's; it retries as before and, failing for good, is dead-lettered again."""
        request = task.request
        outcome = call_step(definition, message, worker=request.hostname or "", task_id=request.id or "")
        self._retry_if_due(task, message, outcome, stopping=lambda: False)
        if outcome.exception is not None:
            self._dead_letter(task, message, outcome.error or describe(outcome.exception))
            raise outcome.exception
        return outcome.result

    def _retry_if_due(
        self, task: Any, message: StepMessage, outcome: StepOutcome, stopping: Any, holding: Held | None = None
    ) -> None:
        """Raise Celery's ``Retry`` when a failed step has retries left and its block is not ``stopping``, once
        the retry's message is published; this worker no longer holds it then (its next try may run anywhere).
        A retry that cannot be published (the broker is away) is no retry: the step fails now, saying so."""
        retries = task.request.retries
        delay = retry_countdown(message, outcome.status, retries, stopping)
        if delay is None:
            return
        options: dict[str, Any] = {}
        expires = message.expires(time.time() + delay)  # it may wait as long again, after its delay
        if expires is not None:
            options["expires"] = datetime.fromtimestamp(expires, tz=timezone.utc)
        try:
            retry = task.retry(
                exc=outcome.exception, countdown=delay, max_retries=message.retries, throw=False, **options
            )
        except Reject as exc:  # Celery's answer to a retry it could not publish
            logger.error("step %s of run %s: its retry could not be published: %s", message.key, message.run, exc)
            outcome.error = f"{outcome.error} (its retry could not be published: {exc.reason})"
            return
        if holding is not None:
            self._let_go_held(message, holding)
        event("retry", attempt=retries + 1, countdown=delay, error=outcome.error)
        raise retry

    def _dead_letter(self, task: Any, message: StepMessage, error: str) -> None:
        """A step that failed for good, on a task queue with a ``dead_letter_queue``: see ``dead_letters``."""
        if message.dlq:
            dead_letter_step(self.app, task, message, error, self.sticky.queue)

    def _bound_redelivery(self, task: Any, message: StepMessage) -> None:
        """at_least_once: a step whose message keeps coming back (its worker lost each time) fails for good."""
        request = task.request
        field = fields.deliveries(message.node, message.index, request.retries)
        delivered = patiently(
            lambda: self.conductor.store.incr(message.run, field), f"counting deliveries of step {message.key}"
        )
        if delivered > int(message.deliveries or 0):
            error = StepLost(
                f"step {message.key!r} was delivered {delivered} times without finishing (its worker was lost "
                f"each time); at_least_once gives up after {message.deliveries}"
            )
            outcome = StepOutcome.failure(message.key, error, worker=request.hostname or "", task_id=request.id or "")
            outcome.dead_letter = message.dlq
            request.n3_after = self.conductor.file(message, outcome)
            self._dead_letter(task, message, describe(error))
            raise error
