"""A run's plan (the nodes of a block, workflow or program) and how a run moves on when a node settles."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from celery.utils.nodenames import worker_direct

from ..errors import SpecError
from ..results import ParallelExecutionResult, RunStatus, WorkflowResult, result_from_dict
from ..routing.distribution import check_distribution, distribution_of, step_queue
from ..routing.policy import delivery_options, retry_policy
from ..routing.queues import pool_queues, task_queue_of
from ..spec import (
    DistributionPolicy,
    FailureMode,
    ParallelBlockSpec,
    ParallelStrategy,
    ProgramSpec,
    StepSpec,
    WorkerPoolSpec,
    WorkflowSpec,
)
from ..spec.program import check_dag
from .store import CoordinationStore


@dataclass(frozen=True)
class PlanNode:
    """One node: a block, or a single step wrapped as a one-step block (``single``)."""

    name: str
    block: ParallelBlockSpec
    depends_on: tuple[str, ...] = ()
    single: bool = False

    def output(self, result: ParallelExecutionResult) -> Any:
        """What later nodes see as ``context["outputs"][name]``."""
        if self.single:
            return result.results[0].result if result.results else None
        return result.final_result


@dataclass(frozen=True)
class PoolRoute:
    """Where a pool's steps go and how: its queue (a region's queue under locality_aware), the targets it
    allows (empty: any), its task queue's delivery contract and its distributed config."""

    queue: str
    allowed_tools: tuple[str, ...] = ()
    allowed_agents: tuple[str, ...] = ()
    arguments: dict[str, Any] = field(default_factory=dict, compare=False)  # the queue's declaration arguments
    countdowns: tuple[float, ...] | None = None  # retry delays of its task queue; None: the block's own retries
    at_least_once: bool = False
    max_message_size: int | None = None
    dead_letter: str | None = None  # the dead-letter queue of its task queue
    sticky: bool = False  # same sticky key, same worker (distribution_policy sticky)
    affinity: str | None = None  # the one worker (node name) its steps go to
    retry_local: bool = False  # failure_mode retry_local: one more try in the process that saw the last failure
    fail_fast: bool = False  # failure_mode fail_fast: a failure is final (a lost worker still redelivers)
    max_wait: float | None = None  # seconds a step may wait in the queue: the lower of the two fields below
    max_wait_field: str = "max_wait_seconds"  # or "message_retention", its task queue's
    fallback_to_local: bool = False  # run in the publishing process when no worker consumes the queue

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolRoute:
        values = dict(data)
        values["allowed_tools"] = tuple(values.get("allowed_tools", ()))
        values["allowed_agents"] = tuple(values.get("allowed_agents", ()))
        if values.get("countdowns") is not None:
            values["countdowns"] = tuple(values["countdowns"])
        values["arguments"] = values.get("arguments") or {}
        return cls(**values)


@dataclass(frozen=True)
class Plan:
    """The nodes of one run, in topological order."""

    kind: str  # "block" | "workflow" | "program"
    name: str
    nodes: tuple[PlanNode, ...]
    pools: dict[str, PoolRoute] = field(default_factory=dict)  # the program's worker pools, by name
    by_name: dict[str, PlanNode] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({n.name: n for n in self.nodes})

    def to_json(self) -> str:
        """The plan as JSON (computed once); ``TypeError``/``ValueError`` when a step carries non-JSON data."""
        return self.json_text

    @cached_property
    def json_text(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "name": self.name,
                "nodes": [
                    {"name": n.name, "block": block_data(n.block), "depends_on": list(n.depends_on), "single": n.single}
                    for n in self.nodes
                ],
                "pools": {name: asdict(route) for name, route in self.pools.items()},
            },
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        nodes = tuple(
            PlanNode(n["name"], ParallelBlockSpec.model_validate(n["block"]), tuple(n["depends_on"]), n["single"])
            for n in data["nodes"]
        )
        pools = {name: PoolRoute.from_dict(route) for name, route in data.get("pools", {}).items()}
        return cls(data["kind"], data["name"], nodes, pools)

    def sinks(self) -> list[str]:
        needed = {d for n in self.nodes for d in n.depends_on}
        return [n.name for n in self.nodes if n.name not in needed]


def block_data(block: ParallelBlockSpec) -> dict[str, Any]:
    """A block as plain data for the plan's JSON, non-default fields only.

    Its steps are dumped in Python mode: a payload value JSON cannot carry (bytes, a datetime, NaN)
    stays as it is, for ``json.dumps`` to refuse, where "json" mode would quietly turn it into a
    string. Its ``metadata`` (the IR's, which Namel3ss fills with what it likes) is dumped in
    "json" mode, as it always was.
    """
    data = block.model_dump(exclude_defaults=True, exclude={"metadata"})
    if block.metadata:
        data["metadata"] = block.model_dump(mode="json", include={"metadata"})["metadata"]
    return data


def make_plan(spec: ParallelBlockSpec | WorkflowSpec | ProgramSpec, workflow: str | None = None) -> Plan:
    """The plan of a block, a workflow, or a program (its one workflow, or its blocks by ``depends_on``).

    Raises:
        SpecError: ``workflow`` is not in the program; several workflows and none chosen; an empty
            program; a workflow node naming a block it cannot see.
    """
    if isinstance(spec, ParallelBlockSpec):
        return Plan("block", spec.name, (PlanNode(spec.name, spec),))
    if isinstance(spec, WorkflowSpec):
        return _workflow_plan(spec, {})
    blocks = {b.name: b for b in spec.parallel_blocks}
    declared = {q.name: dict(getattr(q, "queue_arguments", None) or {}) for q in pool_queues(spec)}
    check_distribution(spec)
    pools = {pool.name: pool_route(spec, pool, declared) for pool in spec.worker_pools}
    if spec.workflows:
        if workflow is None and len(spec.workflows) > 1:
            names = ", ".join(w.name for w in spec.workflows)
            raise SpecError(f"the program has several workflows ({names}); choose one", path="workflows")
        chosen = next((w for w in spec.workflows if workflow in (None, w.name)), None)
        if chosen is None:
            raise SpecError(f"no workflow named {workflow!r} in the program", path="workflows")
        return replace(_workflow_plan(chosen, blocks), pools=pools)
    if not spec.parallel_blocks:
        raise SpecError("the program has no workflows and no parallel_blocks: nothing to run")
    order = check_dag({b.name: b.depends_on for b in spec.parallel_blocks}, "parallel block")
    nodes = tuple(PlanNode(name, blocks[name], tuple(blocks[name].depends_on)) for name in order)
    return Plan("program", spec.name or "program", nodes, pools)


def pool_route(spec: ProgramSpec, pool: WorkerPoolSpec, declared: Mapping[str, dict[str, Any]]) -> PoolRoute:
    """How steps reach ``pool``: from its task queue (the one named like its queue) and its distributed config."""
    queue = task_queue_of(spec, pool)
    config = distribution_of(spec, pool.name)
    countdowns = tuple(retry_policy(queue)["countdowns"]) if queue is not None else None
    target = step_queue(config, pool)
    limits = [(queue.message_retention, "message_retention")] if queue is not None else []
    if config is not None and config.max_wait_seconds is not None:
        limits.append((config.max_wait_seconds, "max_wait_seconds"))
    wait = min(limits) if limits else None
    if config is not None and config.worker_affinity:
        target = worker_direct(config.worker_affinity).name  # that worker's own queue (Celery's worker_direct)
    return PoolRoute(
        target,
        tuple(pool.allowed_tools),
        tuple(pool.allowed_agents),
        declared.get(target, {}),
        countdowns,
        queue is not None and delivery_options(queue)["acks_late"],
        queue.max_message_size if queue is not None else None,
        queue.dead_letter_queue if queue is not None else None,
        sticky=config is not None and config.distribution_policy == DistributionPolicy.STICKY,
        affinity=config.worker_affinity if config is not None else None,
        retry_local=config is not None and config.failure_mode == FailureMode.RETRY_LOCAL,
        fail_fast=config is not None and config.failure_mode == FailureMode.FAIL_FAST,
        max_wait=wait[0] if wait else None,
        max_wait_field=wait[1] if wait else "max_wait_seconds",
        fallback_to_local=config is not None and config.fallback_to_local,
    )


def _workflow_plan(workflow: WorkflowSpec, blocks: Mapping[str, ParallelBlockSpec]) -> Plan:
    order = check_dag({n.name: n.depends_on for n in workflow.steps}, "node")
    by_name = {n.name: n for n in workflow.steps}
    nodes = []
    for name in order:
        node = by_name[name]
        deps = tuple(node.depends_on)
        if node.block is not None:
            if node.block not in blocks:
                raise SpecError(
                    f"node {name!r} names block {node.block!r}, which this workflow cannot see; "
                    "dispatch the program that declares it",
                    path=f"workflows[{workflow.name}].{name}.block",
                )
            nodes.append(PlanNode(name, blocks[node.block], deps))
        else:
            step = StepSpec.model_validate(node.model_dump(exclude={"block", "depends_on"}))
            block = ParallelBlockSpec(name=name, steps=[step], strategy=ParallelStrategy.ALL)
            nodes.append(PlanNode(name, block, deps, single=True))
    return Plan("workflow", workflow.name, tuple(nodes))


# --- moving a run on -----------------------------------------------------------


@dataclass
class Advance:
    """What settling one node means for its run: nodes to launch now, and the final result if it ended."""

    launch: list[PlanNode]
    outputs: dict[str, Any]
    final: ParallelExecutionResult | WorkflowResult | None = None


def node_results(plan: Plan, record: Mapping[str, str]) -> tuple[dict[str, ParallelExecutionResult], dict[str, Any]]:
    """The results filed in a run record so far, and the outputs of the nodes that completed."""
    results = {
        n.name: ParallelExecutionResult.from_dict(json.loads(record[f"node:{n.name}:result"]))
        for n in plan.nodes
        if f"node:{n.name}:result" in record
    }
    outputs = {
        name: plan.by_name[name].output(r) for name, r in results.items() if r.overall_status == RunStatus.COMPLETED
    }
    return results, outputs


def node_settled(
    store: CoordinationStore, run_id: str, plan: Plan, node: str, result: ParallelExecutionResult, ttl: int
) -> Advance:
    """File ``node``'s result, then launch what it unblocked or end the run.

    Idempotent under duplicate calls: launches and the end are claimed in the store.
    """
    filed = json.dumps(result.to_dict())
    record = store.set_and_read(run_id, {f"node:{node}:result": filed})
    results, outputs = node_results(plan, record)
    if "final" in record:  # the run already ended: nothing more starts
        return Advance([], outputs, final_result(record))
    failed = result.overall_status != RunStatus.COMPLETED
    if failed or len(outputs) == len(plan.nodes):
        final = run_result(plan, run_id, record, results, outputs, failed_node=node if failed else None)
        text = filed if plan.kind == "block" else json.dumps(final.to_dict())  # a block run: its block
        store.finish(run_id, {"status": str(final.overall_status), "result": text}, ttl, claim="final")
        return Advance([], outputs, final)
    launch = [
        n
        for n in plan.nodes
        if n.name not in results
        and set(n.depends_on) <= set(outputs)
        and store.claim(run_id, f"node:{n.name}:launched")
    ]
    return Advance(launch, outputs)


def run_result(
    plan: Plan,
    run_id: str,
    record: Mapping[str, str],
    results: Mapping[str, ParallelExecutionResult],
    outputs: Mapping[str, Any],
    failed_node: str | None,
) -> ParallelExecutionResult | WorkflowResult:
    """A block run's result is the block's; a workflow's or program's is a ``WorkflowResult``."""
    if plan.kind == "block":
        return results[plan.nodes[0].name]
    status = results[failed_node].overall_status if failed_node else RunStatus.COMPLETED
    sinks = plan.sinks()
    final = None
    if not failed_node:
        final = outputs[sinks[0]] if len(sinks) == 1 else {s: outputs[s] for s in sinks}
    created = float(record.get("created", 0)) or None
    end = time.time()
    return WorkflowResult(
        run_id=run_id,
        name=plan.name,
        overall_status=status,
        blocks={name: r for name, r in results.items() if not plan.by_name[name].single},
        outputs=dict(outputs),
        final_result=final,
        failed_node=failed_node,
        error_message=f"node {failed_node!r}: {results[failed_node].error_message}" if failed_node else None,
        start_time=created,
        end_time=end,
        total_duration_ms=round((end - created) * 1000, 3) if created else None,
        metadata={"kind": plan.kind, "nodes": {name: str(r.overall_status) for name, r in results.items()}},
    )


def final_result(record: Mapping[str, str]) -> ParallelExecutionResult | WorkflowResult | None:
    """The final result filed in a run record, if the run has ended."""
    raw = record.get("result")
    return result_from_dict(json.loads(raw)) if raw else None


def refreshed_final(
    store: CoordinationStore, run_id: str, plan: Plan
) -> ParallelExecutionResult | WorkflowResult | None:
    """The run's final result rebuilt from its nodes' (refreshed) results; ``None`` while the run goes on.

    Its status and failed node stay as they were decided: only what losers did is new.
    """
    record = store.run_record(run_id) or {}
    previous = final_result(record)
    if previous is None:
        return None
    results, outputs = node_results(plan, record)
    failed_node = previous.failed_node if isinstance(previous, WorkflowResult) else None
    final = run_result(plan, run_id, record, results, outputs, failed_node)
    if isinstance(final, WorkflowResult) and isinstance(previous, WorkflowResult):
        final.end_time, final.total_duration_ms = previous.end_time, previous.total_duration_ms
    return final
