"""The conductor: the rules of a run, in one place, working through a store and a publisher.

It files step outcomes and decides blocks, settles them, feeds ``max_concurrency`` windows, enforces
deadlines, stops losers, launches the nodes a settled block unblocks, and cancels runs. On the Celery
path the store is Redis (or memory, embedded) and the publisher sends Celery messages; in the local
executor the store is memory and the publisher runs steps on asyncio. Nothing here knows which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnknownRun
from ..plan import fields
from ..plan.kinds import Outcome
from ..plan.message import FedStep, StepMessage
from ..plan.model import Plan, PlanNode
from ..registry import Registry
from ..results import ParallelExecutionResult, TaskStatus
from ..tracing import annotate, event, span
from .advance import node_settled
from .control import BlockControl
from .decide import Decision
from .enforce import enforce_deadlines, enforce_ended_processes, enforce_leases, enforce_lost_workers
from .filing import FollowUp, Skipped, file_outcome, skip_step
from .home import Home
from .launcher import Launcher
from .leases import SETTLE_LEASE, LeaseKeeper, settle_lease
from .losers import refresh_decided, stop_losers
from .nodes import broken, launched
from .patience import PATIENCE, patiently
from .ports import CoordinationStore, Held, Publisher
from .recovery import cancel, decide_and_settle, resume
from .runner import StepOutcome
from .settle import settle_block
from .values import describe

logger = logging.getLogger("namel3ss_celery")


class Conductor:
    """Moves runs forward: files step outcomes and does what follows.

    Args:
        store: where runs live (the coordination store), made on first use.
        publisher: how steps are sent (set later with ``connect`` when it needs this conductor).
        registry: where reducers are found when blocks settle.
        ttl: seconds a run's keys live (renewed when it ends).
        executed_on: what a block's result reports as where it ran (``celery`` or ``local``).
        patience: seconds ``file_patiently`` tries again while the store does not answer.
    """

    def __init__(
        self,
        store: Callable[[], CoordinationStore],
        publisher: Publisher[Any] | None,
        registry: Registry,
        ttl: int,
        executed_on: str = "celery",
        patience: float = PATIENCE,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self.registry = registry
        self.ttl = ttl
        self.executed_on = executed_on
        self.patience = patience
        self.run_ended: list[Callable[[str, Plan, Any], None]] = []  # told once per run, as it ends
        # Told as a workflow's node is launched (its result None) and as it ends (its result).
        self.block_moved: list[Callable[[str, Plan, str, ParallelExecutionResult | None], None]] = []
        self.leases = LeaseKeeper(lambda: self.store)  # renewed while this process works under them
        self.home = Home(lambda: self.store, lambda: "")  # whose overdue work it does: all, unless given a broker
        self.launcher = Launcher(
            lambda: self.store,
            lambda: self.publisher,
            registry,
            ttl,
            executed_on,
            self.settle_node,
            self.announce_end,
            self.leases,
            self.announce_block,
        )

    def connect(self, publisher: Publisher[Any]) -> None:
        """Use ``publisher`` to send steps."""
        self._publisher = publisher

    @property
    def store(self) -> CoordinationStore:
        return self._store()

    @property
    def publisher(self) -> Publisher[Any]:
        if self._publisher is None:
            raise LookupError("this conductor has no publisher yet (connect one)")
        return self._publisher

    def control(self, message: StepMessage) -> BlockControl:
        return BlockControl(self.store, message.run, message.node, message.deadline)

    # --- steps ---------------------------------------------------------------
    def file(
        self, message: StepMessage, outcome: StepOutcome, keep: bool = False, held: Held | None = None
    ) -> FollowUp | None:
        """File an outcome, decide the block if this outcome decides it, and say what must follow (see
        ``filing``). With ``keep`` an outcome the step already filed stays; ``held``: how its worker held it."""
        return file_outcome(self.store, message, outcome, self.ttl, self.feed_next, keep, held)

    def file_patiently(
        self, message: StepMessage, outcome: StepOutcome, keep: bool = False, held: Held | None = None
    ) -> FollowUp | None:
        """``file``, tried again while the store does not answer (``patience.patiently``): a step's outcome is
        not dropped because the store restarted while it ran.

        Raises:
            StoreUnavailable: the store did not come back in time (the step fails, or is delivered again
                under at_least_once).
        """
        filing = f"filing step {message.key} of run {message.run}"
        return patiently(lambda: self.file(message, outcome, keep, held), filing, self.patience)

    def follow_up(self, action: FollowUp | None) -> None:
        """Do what ``file`` asked for (on a worker: after Celery stored the step's own state).

        A run whose record expired meanwhile has nothing left to settle: that is logged.
        """
        if action is None:
            return
        try:
            if action.refresh:
                self.refresh_node(action.run_id, action.node)
            else:
                self.settle_node(action.run_id, action.node)
        except UnknownRun:
            logger.warning("block %s of run %s: the run's record expired before it settled", action.node, action.run_id)

    def skip(self, message: StepMessage, worker: str, task_id: str) -> Skipped:
        """A step the start guard refused: file it as ``not_started``, unless its block already ended."""
        return skip_step(self.store, message, worker, task_id, self.file)

    def file_lost(self, payload: Any, task_id: str, reason: str, outcome: Outcome | None = None) -> None:
        """A step that ended without filing its outcome (worker lost, hard time limit, revoked, expired):
        file one for it, unless it filed its own, so its block still ends. ``outcome`` set: it was
        cancelled (not_started, stopped), not failed."""
        message = StepMessage.routing(payload)
        if message is not None:
            self.file_lost_message(message, task_id, reason, outcome)

    def file_lost_message(self, message: StepMessage, task_id: str, reason: str, outcome: Outcome | None) -> None:
        if outcome is None:
            now = time.time()
            lost = StepOutcome(message.key, TaskStatus.FAILED, now, now, task_id=task_id, error=reason)
        else:
            lost = StepOutcome.stopped(message.key, reason, outcome, task_id=task_id)
        try:
            self.follow_up(self.file(message, lost, keep=True))
        except UnknownRun:
            logger.info(
                "step %s of run %s ended without an outcome; the run's record is gone", message.key, message.run
            )

    def feed_next(self, run_id: str, node: str) -> None:
        """Send the next step of a ``max_concurrency`` window, unless the block is decided."""
        if BlockControl(self.store, run_id, node).stop_requested():
            return
        raw = self.store.pop_item(run_id, fields.feed(node))
        if raw is not None:
            self.publisher.send_fed(FedStep.decode(raw))

    # --- blocks ----------------------------------------------------------------

    def settle_node(self, run_id: str, node: str) -> None:
        """Settle one node once (claimed), under its decision if it has one; then move the run on."""
        claimed, record, envelopes = self.store.claim_and_read(run_id, fields.settled(node), node, settle_lease(node))
        if not record:
            logger.warning("run %s expired before block %s settled", run_id, node)
            return
        if claimed:
            with self.leases.holding(run_id, node, SETTLE_LEASE):
                self.settle_claimed(run_id, node, record, envelopes)

    def settle_claimed(self, run_id: str, node: str, record: Mapping[str, str], envelopes: Mapping[int, str]) -> None:
        with span("n3.settle", run_id=run_id, workflow=record.get(fields.NAME), node=node):
            self._settle_traced(run_id, node, record, envelopes)

    def _settle_traced(self, run_id: str, node: str, record: Mapping[str, str], envelopes: Mapping[int, str]) -> None:
        plan = Plan.from_json(record[fields.PLAN])
        if node not in plan.by_name:
            logger.warning("refused to settle block %r of run %s: the run has no such block", node, run_id)
            return
        control = BlockControl(self.store, run_id, node)
        decision = None
        try:
            decision = control.decision_in(record)
            block = launched(plan.by_name[node], record)
            result = settle_block(
                block.block,
                envelopes,
                self.registry,
                executed_on=self.executed_on,
                decision=decision,
                started=control.started(record),
            )
        except Exception as exc:  # noqa: BLE001 - a block must end even when settling it breaks
            logger.exception("settling block %s of run %s failed", node, run_id)
            result = broken(plan.by_name[node], f"settling the block failed: {describe(exc)}", self.registry)
        spec = plan.by_name[node].block
        annotate(block=spec.name, strategy=str(spec.strategy), outcome=str(result.overall_status))
        self.move_on(run_id, plan, record, node, result)
        if plan.by_name[node].block.timeout_seconds is not None:
            # Settled whole: its deadline has nothing left to do (one still there at its time means a settle
            # that died half way, which enforce_deadlines finishes).
            self.store.drop_deadline(run_id, node)
        # Terminating losers comes after the result is out: a waiting client does not wait for it.
        terminate = decision is not None and plan.by_name[node].block.terminate_losers
        if terminate and self.stop_losers(launched(plan.by_name[node], record), control, record):
            self.refresh_node(run_id, node)

    def decide_and_settle(self, run_id: str, node: str, decision: Decision) -> None:
        """A deadline or a cancel: decide the block and settle it (see ``recovery``)."""
        decide_and_settle(self, run_id, node, decision)

    def resume(self, run_id: str, node: str) -> None:
        """Finish a launch or settle whose process died half way (see ``recovery``)."""
        with self.leases.holding(run_id, node, SETTLE_LEASE):  # as long as enforce_leases took it for
            resume(self, run_id, node)

    def cancel(self, run_id: str) -> None:
        """Cancel a run: every launched, unsettled block ends as cancelled; its steps stop or never start."""
        event("cancel", run_id=run_id)
        cancel(self, run_id)

    def refresh_node(self, run_id: str, node: str) -> None:
        """Every step of a decided block has now reported: rewrite its result with what the losers did. A
        decided block nobody settled (its decider did not hear that it won: a reply lost on the way back)
        settles now, as its decider would have (claimed: once)."""
        if not refresh_decided(self.store, self.registry, self.executed_on, run_id, node):
            self.settle_node(run_id, node)

    def stop_losers(self, node: PlanNode, control: BlockControl, record: Mapping[str, str]) -> bool:
        """Terminate running prefork losers (``terminate_losers``; see ``losers``); True when any was."""
        return stop_losers(self.store, self.publisher, node, control, record, self.ttl)

    # --- runs ------------------------------------------------------------------

    def launch_roots(self, run_id: str) -> None:
        """Publish the roots of a new run (see ``Launcher``)."""
        self.launcher.launch_roots(run_id)

    def launch(
        self,
        run_id: str,
        plan: Plan,
        nodes: list[PlanNode],
        record: Mapping[str, str],
        outputs: dict[str, Any],
        cancelled: Mapping[str, str | None] | None = None,
    ) -> None:
        """Publish each node's steps (see ``Launcher.launch``)."""
        self.launcher.launch(run_id, plan, nodes, record, outputs, cancelled)

    def enforce_lost_workers(self, limit: int = 20) -> int:
        """File the steps of workers whose heartbeat ran out as lost (see ``enforce``); how many workers."""
        return enforce_lost_workers(self.store, self.file_lost_message, limit, self.home.takes)

    def enforce_ended_processes(self, worker: str, alive: Callable[[int], bool], incarnation: str = "") -> int:
        """File the steps ``worker`` holds for processes that ended, or for an earlier ``incarnation`` of it, as
        lost (see ``enforce``); how many."""
        return enforce_ended_processes(self.store, self.file_lost_message, worker, alive, incarnation)

    def enforce_leases(self, now: float | None = None, limit: int = 20) -> int:
        """Finish each launch or settle whose process died half way (see ``leases``); how many were due."""
        return enforce_leases(self.store, self.resume, now, limit, self.home.takes)

    def enforce_deadlines(self, now: float | None = None, limit: int = 100) -> int:
        """Decide and settle every block whose deadline has passed (see ``enforce``); how many were due."""
        return enforce_deadlines(self.store, self.decide_and_settle, now, limit, self.home.takes)

    def announce_end(self, run_id: str, plan: Plan, final: Any) -> None:
        """Tell ``run_ended``'s listeners that the run ended (the run has ended whatever they do). Once per
        run, by whoever ended it, under its lease: should it die first, the watchdog that resumes its work
        tells them again (``recovery.resume``); the event service takes that repeat once."""
        logger.info("run %s ended %s", run_id, getattr(final, "overall_status", None))
        for listener in self.run_ended:
            try:
                listener(run_id, plan, final)
            except Exception:  # noqa: BLE001 - the run ended and is filed; a listener's failure is only logged
                logger.exception("announcing the end of run %s failed", run_id)

    def announce_block(self, run_id: str, plan: Plan, node: str, result: ParallelExecutionResult | None) -> None:
        """Tell ``block_moved``'s listeners that a node of a workflow was launched (``result`` None) or ended. A
        lone block's run is its block: its run's start and end say it."""
        if len(plan.nodes) < 2:
            return
        for listener in self.block_moved:
            try:
                listener(run_id, plan, node, result)
            except Exception:  # noqa: BLE001 - the block moved on whatever a listener does; only logged
                logger.exception("announcing block %s of run %s failed", node, run_id)

    def move_on(
        self, run_id: str, plan: Plan, record: Mapping[str, str], node: str, result: ParallelExecutionResult
    ) -> None:
        advance = node_settled(self.store, run_id, plan, node, result, self.ttl)
        self.announce_block(run_id, plan, node, result)
        if advance.ended:
            self.announce_end(run_id, plan, advance.final)
        self.store.drop_lease(run_id, node)  # settled: the nodes it unblocked hold leases of their own
        if advance.launch:
            self.launch(run_id, plan, advance.launch, record, advance.outputs)
