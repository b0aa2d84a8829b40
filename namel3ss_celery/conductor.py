"""The conductor: what the adapter's Celery tasks do, on whichever worker runs them.

It files step outcomes, decides and settles blocks, feeds ``max_concurrency``
windows, enforces deadlines, stops losers, and launches the nodes a settled
block unblocks. The dispatching process uses it too, to cancel a run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .compiler import compile_node
from .compiler.steps import adapter_queue, message_expiry, step_payload
from .errors import RoutingError, SpecError, UnknownTarget
from .placement import fallback_steps
from .registry import SETTLE_DEADLINE_TASK, STEP_TASK_PREFIX, Registry
from .results import ParallelExecutionResult, RunStatus
from .routing.allowed import refusal
from .spec import ParallelStrategy, step_key
from .worker.control import RUN_CANCELLED, BlockControl, Decision, decide_after
from .worker.nodes import (
    broken,
    declare_pool_queues,
    feed_name,
    launched,
    node_context,
    with_fan_out,
)
from .worker.plan import Plan, PlanNode, PoolRoute, node_settled, refreshed_final
from .worker.publish import publish_canvas
from .worker.runner import StepOutcome, call_step, describe
from .worker.settle import settle_block
from .worker.store import CoordinationStore

logger = logging.getLogger("namel3ss_celery")

ROUTING_KEYS = frozenset({"run", "node", "i", "n", "key", "join"})


class Conductor:
    """Moves runs forward: files step outcomes and does what follows (``step_task.StepHandler`` runs the steps)."""

    def __init__(self, app: Any, store: Callable[[], CoordinationStore], registry: Registry, ttl: int) -> None:
        self.app = app
        self._store = store
        self.registry = registry
        self.ttl = ttl

    @property
    def store(self) -> CoordinationStore:
        return self._store()

    # --- steps ---------------------------------------------------------------
    def file(self, payload: dict[str, Any], outcome: StepOutcome, keep: bool = False) -> tuple[str, ...]:
        """File an outcome and say what must follow: ``("settle"|"decided"|"refresh", run, node)`` or nothing."""
        run_id, node, index = payload["run"], payload["node"], payload["i"]
        control = BlockControl(self.store, run_id, node, payload.get("deadline"))
        overdue = control.overdue()
        if overdue is not None and control.decide(overdue):
            # This step is the first to see the deadline passed: it ends the block as timed out.
            if outcome.outcome is None:
                outcome.outcome = "stopped" if outcome.status == "cancelled" else "ran_to_end"
            self.store.record_step(run_id, node, index, outcome.envelope(), self.ttl, keep=keep)
            return ("decided", run_id, node)
        if keep:
            filed = self.store.record_step(run_id, node, index, outcome.envelope(), self.ttl, keep=True)
            prior = control.decision()
        else:  # the common case: file and read the decision in one round trip
            filed, raw = self.store.file_step(run_id, node, index, outcome.envelope(), self.ttl, control.decided_field)
            prior = Decision.from_json(raw) if raw else None
        if prior is not None and outcome.outcome is None:
            # A late step (its block was decided before it reported): file what it did.
            outcome.outcome = "stopped" if outcome.status == "cancelled" else "ran_to_end"
            self.store.record_step(run_id, node, index, outcome.envelope(), self.ttl, keep=keep)
        complete = filed >= payload["n"]
        if prior is None:
            strategy = ParallelStrategy(payload.get("strategy", "all"))
            decision = decide_after(
                strategy, bool(payload.get("fail_fast")), payload["n"], filed, index, payload["key"], outcome.status
            )
            if decision is not None and control.decide(decision):
                return ("decided", run_id, node)
            if decision is None and payload["join"] == "count" and complete:
                return ("settle", run_id, node)
            if payload.get("feed"):
                self.feed_next(run_id, node)
        # A late step that ran (stopped, or ran to its end) rewrites the decided block's result;
        # one that never started is already reported as not_started.
        late = complete or outcome.outcome in ("stopped", "ran_to_end")
        return ("refresh", run_id, node) if late and control.decision() is not None else ()

    def follow_up(self, action: tuple[str, ...] | None) -> None:
        """Do what ``file`` asked for, after Celery stored the step's own state."""
        if not action:
            return
        kind, run_id, node = action
        if kind == "refresh":
            self.refresh_node(run_id, node)
        else:
            self.settle_node(run_id, node)

    def file_lost(self, payload: Any, task_id: str, reason: str, outcome: str | None = None) -> None:
        """A step that ended without filing its outcome (worker lost, hard time limit, revoked, expired):
        file one for it, unless it filed its own, so its block still ends."""
        if not isinstance(payload, dict) or not set(payload) >= ROUTING_KEYS:
            return
        now = time.time()
        status = "failed" if outcome is None else "cancelled"
        lost = StepOutcome(payload["key"], status, None, reason, None, now, now, "", task_id, outcome)
        self.follow_up(self.file(payload, lost, keep=True))

    def feed_next(self, run_id: str, node: str) -> None:
        """Publish the next step of a ``max_concurrency`` window, unless the block is decided."""
        if BlockControl(self.store, run_id, node).stop_requested():
            return
        raw = self.store.pop_item(run_id, feed_name(node))
        if raw is None:
            return
        item = json.loads(raw)
        options: dict[str, Any] = {"queue": item["queue"]} if item.get("queue") else {}
        expires_at = message_expiry(item["payload"], time.time())  # it starts waiting now
        if expires_at is not None:
            options["expires"] = datetime.fromtimestamp(expires_at, tz=timezone.utc)
        self.app.signature(STEP_TASK_PREFIX + item["task"], args=(item["payload"],), immutable=True).apply_async(
            **options
        )

    # --- blocks ----------------------------------------------------------------

    def settle_node(self, run_id: str, node: str) -> None:
        """Settle one node once (claimed), under its decision if it has one; then move the run on."""
        claimed, record, envelopes = self.store.claim_and_read(run_id, f"node:{node}:settled", node)
        if not claimed:
            return
        if "plan" not in record:
            logger.warning("run %s expired before block %s settled", run_id, node)
            return
        plan = Plan.from_json(record["plan"])
        control = BlockControl(self.store, run_id, node)
        decision = None
        try:
            decision = control.decision_in(record)
            block = launched(plan, record, node)
            result = settle_block(
                block.block, envelopes, self.registry, decision=decision, started=control.started(record)
            )
        except Exception as exc:  # noqa: BLE001 - a block must end even when settling it breaks
            logger.exception("settling block %s of run %s failed", node, run_id)
            result = broken(plan.by_name[node], f"settling the block failed: {describe(exc)}", self.registry)
        self._advance(run_id, plan, record, node, result)
        # Terminating losers comes after the result is out: a waiting client does not wait for it.
        terminate = decision is not None and plan.by_name[node].block.terminate_losers
        if terminate and self.stop_losers(launched(plan, record, node), control, record):
            self.refresh_node(run_id, node)

    def _settle(
        self, node: PlanNode, run_id: str, record: dict[str, str], decision: Decision | None
    ) -> ParallelExecutionResult:
        control = BlockControl(self.store, run_id, node.name)
        envelopes = self.store.step_envelopes(run_id, node.name)
        return settle_block(node.block, envelopes, self.registry, decision=decision, started=control.started(record))

    def decide_and_settle(self, run_id: str, node: str, decision: Decision) -> None:
        """A deadline or a cancel: decide the block (unless it settled or was decided first), then settle it."""
        (settled,) = self.store.get_fields(run_id, [f"node:{node}:settled"])
        if settled is None:
            BlockControl(self.store, run_id, node).decide(decision)
            self.settle_node(run_id, node)  # claimed: settles once, under whichever decision came first

    def refresh_node(self, run_id: str, node: str) -> None:
        """Every step of a decided block has now reported: rewrite its result with what the losers did."""
        record = self.store.run_record(run_id)
        if record is None or f"node:{node}:result" not in record:
            return
        plan = Plan.from_json(record["plan"])
        decision = BlockControl(self.store, run_id, node).decision()
        result = self._settle(launched(plan, record, node), run_id, record, decision)
        self.store.set_fields(run_id, {f"node:{node}:result": json.dumps(result.to_dict())})
        final = refreshed_final(self.store, run_id, plan)
        if final is not None:
            self.store.set_fields(run_id, {"result": json.dumps(final.to_dict())})

    def stop_losers(self, node: PlanNode, control: BlockControl, record: dict[str, str]) -> bool:
        """Terminate running prefork losers (``terminate_losers``); True when any was.

        Every running loser is already asked to stop (it reads the decision); on other pools a
        loser that never checks runs to its end, and that is logged.
        """
        envelopes = self.store.step_envelopes(control.run_id, node.name)
        decision = control.decision_in(record)
        terminated = False
        for index, info in control.started(record).items():
            if index in envelopes or (decision is not None and decision.winner == index):
                continue
            if info.get("pool") != "prefork":
                logger.warning(
                    "terminate_losers: step %s of block %s runs on a %s pool, which cannot terminate it",
                    index,
                    node.name,
                    info.get("pool"),
                )
                continue
            if info.get("task_id"):
                terminated = True
                self.app.control.revoke(info["task_id"], terminate=True, signal=signal.SIGTERM)
                # A terminated step files nothing itself; if it finishes first, its own envelope replaces this.
                now = time.time()
                key = step_key(node.block.steps[index], index)
                reason = "terminated: its block no longer needed it (terminate_losers)"
                outcome = StepOutcome(
                    key,
                    "cancelled",
                    None,
                    reason,
                    None,
                    float(info.get("start") or now),  # type: ignore[arg-type]
                    now,
                    str(info.get("worker", "")),
                    str(info["task_id"]),
                    "stopped",
                )
                self.store.record_step(control.run_id, node.name, index, outcome.envelope(), self.ttl, keep=True)
        return terminated

    # --- runs ------------------------------------------------------------------

    def launch_roots(self, run_id: str) -> None:
        """Publish the nodes of a new run that depend on nothing (``n3.run.launch``, on a worker).

        ``dispatch`` launches a small run itself, with ``launch``."""
        record = self.store.run_record(run_id)
        if record is None:
            logger.warning("run %s expired before it was launched", run_id)
            return
        plan = Plan.from_json(record["plan"])
        roots: list[PlanNode] = []
        cancelled: dict[str, str | None] = {}
        for node in plan.nodes:
            if not node.depends_on:
                # Whether the run was cancelled, read with the claim: a cancel that comes later sees the claim.
                claimed, cancelled[node.name] = self.store.claim_and_get(
                    run_id, f"node:{node.name}:launched", RUN_CANCELLED
                )
                if claimed:
                    roots.append(node)
        self.launch(run_id, plan, roots, record, {}, cancelled)

    def launch(
        self,
        run_id: str,
        plan: Plan,
        nodes: list[PlanNode],
        record: dict[str, str],
        outputs: dict[str, Any],
        cancelled: dict[str, str | None] | None = None,
    ) -> None:
        """Publish each node's canvas (and its feed and deadline); a node with no steps settles at once.

        ``cancelled``: the run's cancelled field as read when a node was claimed (otherwise it is read here).
        """
        pending, cancelled = deque(nodes), cancelled or {}
        while pending:
            node, context, failure = pending.popleft(), node_context(record, outputs), None
            fanned = node.block.fan_out is not None
            try:
                node = with_fan_out(node, context)
            except SpecError as exc:
                failure = Decision(RunStatus.FAILED, None, str(exc))
            if fanned and failure is None:
                self.store.set_fields(run_id, {f"node:{node.name}:block": node.block.model_dump_json()})
            if failure is None and (
                cancelled[node.name] if node.name in cancelled else self.store.get_fields(run_id, [RUN_CANCELLED])[0]
            ):
                failure = Decision(RunStatus.CANCELLED, None, "run cancelled")
                BlockControl(self.store, run_id, node.name).decide(failure)
            if node.block.steps and failure is None:
                try:
                    self._publish(run_id, node, context, plan)
                    continue
                except Exception as exc:  # noqa: BLE001 - a block that cannot start ends as failed
                    logger.exception("launching block %s of run %s failed", node.name, run_id)
                    failure = Decision(RunStatus.FAILED, None, f"launching the block failed: {describe(exc)}")
            if self.store.claim(run_id, f"node:{node.name}:settled"):
                result = settle_block(node.block, {}, self.registry, decision=failure)
                advance = node_settled(self.store, run_id, plan, node.name, result, self.ttl)
                outputs = advance.outputs
                pending.extend(advance.launch)

    def _publish(self, run_id: str, node: PlanNode, context: dict[str, Any], plan: Plan) -> None:
        declare_pool_queues(self.app, plan.pools)
        local = fallback_steps(self.app, node.block, plan.pools)
        launch = compile_node(self.app, node, run_id, context, plan.pools, skip=local)
        if local:
            logger.warning(
                "no worker consumes the queue of steps %s of block %s: running them here", sorted(local), node.name
            )
            args = (run_id, node, context, sorted(local), plan, launch.deadline)
            threading.Thread(target=self._run_here, args=args, name=f"n3-local-{node.name}", daemon=True).start()
        self.store.push_items(run_id, feed_name(node.name), launch.feed, self.ttl)
        if launch.deadline is not None:
            queue = None if local else adapter_queue(node.block, plan.pools)
            self.app.signature(SETTLE_DEADLINE_TASK, args=(run_id, node.name)).apply_async(
                eta=datetime.fromtimestamp(launch.deadline, tz=timezone.utc),
                ignore_result=True,
                **({"queue": queue} if queue else {}),
            )
        publish_canvas(self.app, launch.canvas)

    def _run_here(
        self,
        run_id: str,
        node: PlanNode,
        context: dict[str, Any],
        indexes: list[int],
        plan: Plan,
        deadline: float | None,
    ) -> None:
        """fallback_to_local: run steps in this process, one after another, and file them as a worker would.

        Whatever goes wrong with one step (its message, its target, the store) fails that step, so its
        block still ends; the pool's allowed targets apply as on its workers.
        """
        where = f"local@{socket.gethostname()}"
        for index in indexes:
            step = node.block.steps[index]
            payload: dict[str, Any] = {  # enough to file a failure, should the full message not be made
                "run": run_id,
                "node": node.name,
                "i": index,
                "n": len(node.block.steps),
                "key": step_key(step, index),
                "join": "count",
                "strategy": str(node.block.strategy),
                "fail_fast": node.block.fail_fast,
                "deadline": deadline,
            }
            try:
                payload = step_payload(
                    node.block, index, run_id, node.name, context, "count", False, deadline, plan.pools
                )
                outcome = self._run_one_here(payload, step.worker_pool, plan.pools.get(step.worker_pool or ""), where)
            except Exception as exc:  # noqa: BLE001 - a step that cannot run here fails, and its block goes on
                logger.exception("step %s of block %s could not run here", payload["key"], node.name)
                now = time.time()
                outcome = StepOutcome(payload["key"], "failed", None, describe(exc), exc, now, now, where, "")
            outcome.executed_on = "local"
            try:
                self.follow_up(self.file(payload, outcome, keep=outcome.outcome == "not_started"))
            except Exception:  # noqa: BLE001 - the store is gone: nothing else can be filed either
                logger.exception("step %s of block %s ran here but could not be filed", payload["key"], node.name)

    def _run_one_here(
        self, payload: dict[str, Any], pool: str | None, route: PoolRoute | None, where: str
    ) -> StepOutcome:
        target = str(payload["step"]["target"])
        definition = self.registry.step(target)
        if definition is None:
            raise UnknownTarget(f"target {target!r} is not registered in this process")
        if route is not None:
            refused = refusal(
                str(pool), str(payload["step"].get("kind", "tool")), target, route.allowed_tools, route.allowed_agents
            )
            if refused is not None:
                raise RoutingError(refused)
        control = BlockControl(self.store, payload["run"], payload["node"], payload.get("deadline"))
        if not control.start(payload["i"], where, "local", os.getpid(), ""):
            now = time.time()
            reason = "not started: its block was already decided"
            return StepOutcome(payload["key"], "cancelled", None, reason, None, now, now, where, "", "not_started")
        return call_step(definition, payload, worker=where, task_id="", should_stop=control.stop_requested)

    def cancel(self, run_id: str) -> None:
        """Cancel a run: every launched, unsettled block ends as cancelled; its steps stop or never start."""
        self.store.set_fields(run_id, {"cancelled": "1"})
        record = self.store.run_record(run_id) or {}
        plan = Plan.from_json(record["plan"])
        for node in plan.nodes:
            if f"node:{node.name}:launched" in record and f"node:{node.name}:settled" not in record:
                self.decide_and_settle(run_id, node.name, Decision(RunStatus.CANCELLED, None, "run cancelled"))

    def _advance(self, run_id: str, plan: Plan, record: dict[str, str], node: str, result: Any) -> None:
        advance = node_settled(self.store, run_id, plan, node, result, self.ttl)
        if advance.final is not None:
            logger.info("run %s ended %s", run_id, advance.final.overall_status)
        if advance.launch:
            self.launch(run_id, plan, advance.launch, record, advance.outputs)
