"""Making a run's plan from a spec: its nodes in topological order, and a route for each worker pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery.utils.nodenames import worker_direct
from pydantic_core import PydanticSerializationError

from ..errors import SpecError
from ..plan.model import Plan, PlanNode, PoolRoute
from ..routing.distribution import check_distribution, distribution_of, step_queue
from ..routing.policy import delivery_options, retry_policy
from ..routing.queues import pool_queues, task_queue_of, visibility_timeout
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
from ..spec.limits import MAX_PLAN_BYTES
from ..spec.program import check_dag


def make_plan(spec: ParallelBlockSpec | WorkflowSpec | ProgramSpec, workflow: str | None = None) -> Plan:
    """The plan of a block, a workflow, or a program (its one workflow, or its blocks by ``depends_on``).

    Raises:
        SpecError: ``workflow`` is not in the program, or given for a spec with no workflows to choose
            from (path ``workflow``); several workflows and none chosen; an empty program; a workflow
            node naming a block it cannot see; a plan whose JSON is over ``MAX_PLAN_BYTES``.
    """
    return _bounded(_make_plan(spec, workflow))


def _make_plan(spec: ParallelBlockSpec | WorkflowSpec | ProgramSpec, workflow: str | None) -> Plan:
    if workflow is not None and not (isinstance(spec, ProgramSpec) and spec.workflows):
        what = "a program without workflows" if isinstance(spec, ProgramSpec) else f"a {type(spec).__name__}"
        raise SpecError(
            f"workflow={workflow!r} chooses among a program's workflows, and the spec is {what}; "
            "leave workflow out, or dispatch the program that declares it",
            path="workflow",
        )
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


def _bounded(plan: Plan) -> Plan:
    """``plan``, once its JSON (what the run's record stores) is within ``MAX_PLAN_BYTES``."""
    try:
        text = plan.to_json()
    except (TypeError, ValueError, PydanticSerializationError):
        return plan  # not JSON data: check_plan refuses it, naming the step that carries what JSON cannot
    if len(text) > MAX_PLAN_BYTES:  # ASCII JSON: one byte a character
        raise SpecError(
            f"the run's plan is {len(text)} bytes of JSON, over the limit of {MAX_PLAN_BYTES} (MAX_PLAN_BYTES); "
            "split the work into smaller runs, or fan out over the context",
            path="plan",
        )
    return plan


def pool_route(spec: ProgramSpec, pool: WorkerPoolSpec, declared: Mapping[str, dict[str, Any]]) -> PoolRoute:
    """How steps reach ``pool``: from its task queue (the one named like its queue) and its distributed config."""
    queue = task_queue_of(spec, pool)
    config = distribution_of(spec, pool.name)
    visibility = visibility_timeout(spec)
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
        visibility_timeout=visibility if queue is not None and delivery_options(queue)["acks_late"] else None,
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
