"""The adapter's Celery tasks: the step runner task of each target, chord settle and its errback.

``Conductor`` is what those tasks call: it files step outcomes, settles
blocks, and launches the nodes a settled block unblocks. It runs wherever
the task runs (a worker, or the dispatching process for the first nodes).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from celery import states
from celery.app.task import Context
from celery.exceptions import NotRegistered

from .compiler import compile_node
from .registry import LAUNCH_TASK, SETTLE_CHORD_FAILED_TASK, SETTLE_CHORD_TASK, STEP_TASK_PREFIX, Registry, StepDef
from .worker.plan import Plan, PlanNode, node_settled
from .worker.runner import StepOutcome, call_step, check_payload, describe
from .worker.settle import settle_block
from .worker.store import CoordinationStore

logger = logging.getLogger("namel3ss_celery")

ROUTING_KEYS = frozenset({"run", "node", "i", "n", "key", "join"})


class Conductor:
    """Moves runs forward: file outcomes, settle blocks, launch what follows."""

    def __init__(self, app: Any, store: Callable[[], CoordinationStore], registry: Registry, ttl: int) -> None:
        self.app = app
        self._store = store
        self.registry = registry
        self.ttl = ttl

    @property
    def store(self) -> CoordinationStore:
        return self._store()

    # --- steps -------------------------------------------------------------

    def run_step(self, task: Any, definition: StepDef, payload: Any) -> Any:
        """The body of ``n3.step.<target>``: run, file, join; raise so Celery records a FAILURE."""
        request = task.request
        try:
            payload = check_payload(payload, definition)
        except Exception as exc:
            routable = isinstance(payload, dict) and set(payload) >= ROUTING_KEYS
            if routable and self.file_outcome(payload, _refused(payload, exc, request.hostname, request.id)):
                request.n3_settle = (payload["run"], payload["node"])
            raise
        outcome = call_step(definition, payload, worker=request.hostname or "", task_id=request.id or "")
        logger.debug(
            "step %s of block %s in run %s: %s", payload["key"], payload["node"], payload["run"], outcome.status
        )
        if self.file_outcome(payload, outcome):
            # Settle in after_return, once Celery has stored this task's own state.
            request.n3_settle = (payload["run"], payload["node"])
        if outcome.exception is not None:
            raise outcome.exception
        return outcome.result

    def file_outcome(self, payload: dict[str, Any], outcome: StepOutcome) -> bool:
        """File the envelope; True when it completes a counted join (the caller then settles the block)."""
        count = self.store.record_step(payload["run"], payload["node"], payload["i"], outcome.envelope(), self.ttl)
        return bool(payload["join"] == "count" and count >= payload["n"])

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
        if self.file_outcome(payload, StepOutcome(payload["key"], "failed", None, error, exc, 0.0, 0.0, "", task_id)):
            self.settle_node(payload["run"], payload["node"])
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
            self.app.backend.on_chord_part_return(request, states.FAILURE, exc)

    # --- blocks and runs ----------------------------------------------------

    def settle_node(self, run_id: str, node: str) -> None:
        """Settle one node once (claimed), then launch what it unblocks or end the run."""
        if not self.store.claim(run_id, f"node:{node}:settled"):
            return
        record = self.store.run_record(run_id)
        if record is None:
            logger.warning("run %s expired before block %s settled", run_id, node)
            return
        plan = Plan.from_json(record["plan"])
        result = settle_block(plan.by_name[node].block, self.store.step_envelopes(run_id, node), self.registry)
        self._advance(run_id, plan, record, node, result)

    def launch_roots(self, run_id: str) -> None:
        """Publish the nodes of a new run that depend on nothing (``n3.run.launch``, on a worker)."""
        record = self.store.run_record(run_id)
        if record is None:
            logger.warning("run %s expired before it was launched", run_id)
            return
        plan = Plan.from_json(record["plan"])
        roots = [n for n in plan.nodes if not n.depends_on and self.store.claim(run_id, f"node:{n.name}:launched")]
        self.launch(run_id, plan, roots, record, {})

    def launch(
        self, run_id: str, plan: Plan, nodes: list[PlanNode], record: dict[str, str], outputs: dict[str, Any]
    ) -> None:
        """Publish each node's canvas; a node with no steps settles at once."""
        pending = deque(nodes)
        while pending:
            node = pending.popleft()
            context = node_context(record, outputs)
            if node.block.steps:
                compile_node(self.app, node, run_id, context).apply_async()
                continue
            if self.store.claim(run_id, f"node:{node.name}:settled"):
                result = settle_block(node.block, {}, self.registry)
                advance = node_settled(self.store, run_id, plan, node.name, result, self.ttl)
                outputs = advance.outputs
                pending.extend(advance.launch)

    def _advance(self, run_id: str, plan: Plan, record: dict[str, str], node: str, result: Any) -> None:
        advance = node_settled(self.store, run_id, plan, node, result, self.ttl)
        if advance.final is not None:
            logger.info("run %s ended %s", run_id, advance.final.overall_status)
        if advance.launch:
            self.launch(run_id, plan, advance.launch, record, advance.outputs)


def node_context(record: dict[str, str], outputs: dict[str, Any]) -> dict[str, Any]:
    """The run's context with the outputs of the nodes finished so far under ``"outputs"``."""
    context: dict[str, Any] = json.loads(record.get("context") or "{}")
    return {**context, "outputs": {**context.get("outputs", {}), **outputs}}


def _refused(payload: dict[str, Any], exc: BaseException, worker: str | None, task_id: str | None) -> StepOutcome:
    return StepOutcome(payload["key"], "failed", None, describe(exc), exc, 0.0, 0.0, worker or "", task_id or "")


def register_adapter_tasks(app: Any, conductor: Conductor) -> None:
    """Register ``n3.run.launch``, ``n3.settle.chord`` and its errback ``n3.settle.chord_failed`` on ``app``."""

    @app.task(name=LAUNCH_TASK, shared=False, ignore_result=True)
    def launch_run(run_id: str) -> None:
        conductor.launch_roots(run_id)

    @app.task(name=SETTLE_CHORD_TASK, shared=False, ignore_result=True)
    def settle_chord(run_id: str, node: str) -> None:
        conductor.settle_node(run_id, node)

    @app.task(name=SETTLE_CHORD_FAILED_TASK, shared=False, ignore_result=True)
    def settle_chord_failed(request: Any, exc: Any, traceback: Any, run_id: str, node: str) -> None:
        conductor.settle_node(run_id, node)


def step_task_class(app: Any, conductor: Conductor) -> type:
    """The app's own task class (Django's, Flask's, the user's), plus the settle of counted joins."""

    class Namel3ssStepTask(app.Task):  # type: ignore[misc, name-defined]
        def after_return(self, *args: Any, **kwargs: Any) -> None:
            super().after_return(*args, **kwargs)
            pending = getattr(self.request, "n3_settle", None)
            if pending is not None:
                self.request.n3_settle = None
                conductor.settle_node(*pending)

    return Namel3ssStepTask


def register_step_task(app: Any, conductor: Conductor, base: type, definition: StepDef) -> None:
    """Register ``n3.step.<target>`` on ``app``; results are always kept (a chord needs them)."""

    def run(task: Any, payload: Any) -> Any:
        return conductor.run_step(task, definition, payload)

    run.__doc__ = definition.function.__doc__
    app.task(name=definition.task_name, base=base, bind=True, shared=False, ignore_result=False)(run)
