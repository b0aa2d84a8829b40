"""Filing a step's outcome: the rules that decide a block as its steps report.

An outcome is filed once per step (a duplicate or lost step never replaces what the step itself
reported), and the outcome that decides its block (the first success of a race, the first failure of
a fail-fast ``all``, the last of a counted block, a deadline already passed) says so. A step that
reports after its block was decided is filed as what it did (stopped, or ran to its end), and its
block's result is rewritten once every step has reported. ``Conductor.file`` and ``Conductor.skip``
are these functions with the conductor's store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..plan import fields
from ..plan.kinds import Join, Outcome
from ..plan.message import StepMessage
from ..results import TaskStatus
from .control import BlockControl
from .decide import CANCELLED, NOT_STARTED, Decision, decide_after
from .ports import CoordinationStore, Held
from .runner import StepOutcome


@dataclass(frozen=True)
class FollowUp:
    """What filing an outcome asks for next: settle the block (``refresh``: rewrite its result)."""

    run_id: str
    node: str
    refresh: bool = False


@dataclass(frozen=True)
class Skipped:
    """A step that did not start: what follows, and whether it was filed (``not_started``) at all."""

    follow_up: FollowUp | None
    filed: bool


def _late(outcome: StepOutcome) -> None:
    """A step that reports after its block was decided: it was stopped, or ran to its end."""
    if outcome.outcome is None:
        outcome.outcome = Outcome.STOPPED if outcome.status == TaskStatus.CANCELLED else Outcome.RAN_TO_END


def file_outcome(
    store: CoordinationStore,
    message: StepMessage,
    outcome: StepOutcome,
    ttl: int,
    feed_next: Callable[[str, str], None],
    keep: bool = False,
    held: Held | None = None,
) -> FollowUp | None:
    """File ``outcome``, decide the block if this outcome decides it, and say what must follow.

    With ``keep`` an outcome the step already filed stays. ``held``: how its worker held the step while
    it ran (released now). ``feed_next`` sends the next step of a ``max_concurrency`` window.
    """
    run_id, node, index = message.run, message.node, message.index
    control = BlockControl(store, run_id, node, message.deadline)
    overdue = control.overdue()
    if overdue is not None and not _settled(store, run_id, node) and control.decide(overdue):
        # This step is the first to see the deadline passed: it ends the block as timed out.
        _late(outcome)
        store.record_step(run_id, node, index, outcome.envelope(), ttl, keep=keep)
        if held is not None:
            store.release(held.worker, held.member)
        return FollowUp(run_id, node)
    if keep:
        filed, wrote = store.add_step(run_id, node, index, outcome.envelope(), ttl)
        if held is not None:
            store.release(held.worker, held.member)
        prior = control.decision()
        if not wrote:
            # The step filed its own outcome, which stays and made its own decision: this one (lost, not
            # started) decides nothing. Its block settles if it is due (a claim: once), in case the process
            # that filed it died before settling.
            return FollowUp(run_id, node) if prior is not None or filed >= message.total else None
    else:  # the common case: file and read the decision in one round trip
        filed, raw = store.file_step(run_id, node, index, outcome.envelope(), ttl, control.decided_field, held)
        prior = Decision.from_json(raw) if raw else None
        if prior is not None and outcome.outcome is None:
            _late(outcome)  # file what it did
            store.record_step(run_id, node, index, outcome.envelope(), ttl)
    complete = filed >= message.total
    if prior is None:
        decision = decide_after(
            message.strategy,
            fail_fast=message.fail_fast,
            total=message.total,
            filed=filed,
            index=index,
            key=message.key,
            status=outcome.status,
        )
        if outcome.status == TaskStatus.CANCELLED and store.get_fields(run_id, [fields.CANCELLED])[0]:
            # It stopped because its run was cancelled, before the cancel decided its block: it ends as cancelled.
            decision = CANCELLED
        if decision is not None and control.decide(decision):
            return FollowUp(run_id, node)
        if decision is None and message.join == Join.COUNT and complete:
            return FollowUp(run_id, node)
        if message.feed:
            feed_next(run_id, node)
    # A late step that ran (stopped, or ran to its end) rewrites the decided block's result;
    # one that never started is already reported as not_started.
    late = complete or outcome.outcome in (Outcome.STOPPED, Outcome.RAN_TO_END)
    return FollowUp(run_id, node, refresh=True) if late and control.decision() is not None else None


def skip_step(
    store: CoordinationStore,
    message: StepMessage,
    worker: str,
    task_id: str,
    file: Callable[[StepMessage, StepOutcome, bool], FollowUp | None],
) -> Skipped:
    """A step the start guard refused: file it as ``not_started`` (with ``file``), unless its block ended.

    When nothing decided its block yet (the run was cancelled, or its deadline passed), this step
    decides it so, and its block settles. A step of a block that ended with every step reported
    is a duplicate delivery: nothing is filed.
    """
    settled, decided = store.get_fields(message.run, [fields.settled(message.node), fields.decided(message.node)])
    if settled and not decided:
        return Skipped(None, filed=False)
    control = BlockControl(store, message.run, message.node, message.deadline)
    decided_here = decided is None and control.decide(control.overdue() or CANCELLED)
    outcome = StepOutcome.stopped(message.key, NOT_STARTED, Outcome.NOT_STARTED, worker=worker, task_id=task_id)
    follow_up = file(message, outcome, True)
    return Skipped(FollowUp(message.run, message.node) if decided_here else follow_up, filed=True)


def _settled(store: CoordinationStore, run_id: str, node: str) -> bool:
    (settled,) = store.get_fields(run_id, [fields.settled(node)])
    return settled is not None
