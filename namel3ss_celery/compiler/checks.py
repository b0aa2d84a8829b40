"""Everything a worker would refuse, refused before anything is published: targets, pools, reducers,
JSON, the visibility timeout of at_least_once queues, and the run's context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticSerializationError

from ..engine.settle import resolve_reducer
from ..engine.values import to_json_data
from ..errors import CompileError, NotSupportedYet, SpecError, StepResultError, UnknownTarget
from ..plan.model import Plan, PoolRoute
from ..registry import Registry
from ..routing.allowed import refusal
from ..routing.policy import HARD_LIMIT_GRACE
from ..routing.queues import Broker, broker_kind
from ..spec import ParallelStrategy, step_key
from ..spec.context import context_mapping
from .support import check_supported


def check_plan(plan: Plan, registry: Registry, step_modules: tuple[str, ...]) -> None:
    """Everything a worker would refuse, refused here first, before anything is published.

    Raises:
        NotSupportedYet: a field asks for behaviour this release does not have.
        UnknownTarget: a step's target is neither registered nor a ``module:function`` of a listed module.
        CompileError: a step has no target, or map_reduce names an unknown reducer.
        SpecError: a step carries a value JSON cannot carry (``check_json``).
    """
    known: set[str] = set()  # targets checked already: a large block repeats a few
    for node in plan.nodes:
        path = node_path(plan, node.name)
        check_supported(node.block, path)
        if node.block.fan_out is not None:
            check_target(node.block.fan_out.target, registry, step_modules, f"{path}.fan_out.target")
        for index, step in enumerate(node.block.steps):
            if step.target in known and step.worker_pool is None:
                continue
            step_path = f"{path}.steps[{index}]"
            if not step.target:
                raise CompileError("step has no target (give 'target' or 'type')", path=step_path)
            check_target(step.target, registry, step_modules, step_path)
            known.add(step.target)
            if step.worker_pool is not None:
                check_pool(step.target, step.worker_pool, plan.pools, f"{step_path}.worker_pool", step.kind)
                if plan.pools[step.worker_pool].fallback_to_local and node.block.max_concurrency is not None:
                    raise NotSupportedYet(
                        f"pool {step.worker_pool!r} has fallback_to_local, which a block with max_concurrency "
                        f"does not support yet (its window would not count steps run in the publishing process)",
                        path=f"{path}.max_concurrency",
                    )
        if node.block.strategy == ParallelStrategy.MAP_REDUCE:
            try:
                resolve_reducer(node.block.reduce_function or "", registry)
            except KeyError as exc:
                raise CompileError(str(exc.args[0]), path=f"{path}.reduce_function") from exc
    check_json(plan)


def node_path(plan: Plan, node: str) -> str:
    """Where a node is in what was dispatched: ``block[b]``, or ``workflow[w].node`` (``program[p].node``)."""
    if plan.kind == "block":
        return f"block[{plan.name}]"
    return f"{plan.kind}[{plan.name}].{node}"


def check_visibility(plan: Plan, broker_url: str) -> None:
    """On Redis, a step of an at_least_once queue must end (killed at its hard limit at the latest) before the
    broker's visibility timeout, or Redis delivers it again while it runs, and again.

    Raises:
        CompileError: a step's ``timeout_seconds`` plus the hard limit's grace is not below the visibility
            timeout of its queue (path ``<node>.steps[<i>].timeout_seconds``).
    """
    if broker_kind(broker_url or "memory://") is not Broker.REDIS:
        return
    for node in plan.nodes:
        for index, step in enumerate(node.block.steps):
            route = plan.pools.get(step.worker_pool) if step.worker_pool else None
            if route is None or route.visibility_timeout is None or step.timeout_seconds is None:
                continue
            if step.timeout_seconds + HARD_LIMIT_GRACE >= route.visibility_timeout:
                raise CompileError(
                    f"step {step_key(step, index)!r} may run {step.timeout_seconds:g}s (killed "
                    f"{HARD_LIMIT_GRACE:g}s later), not less than the Redis visibility timeout "
                    f"({route.visibility_timeout:g}s) of its at_least_once queue {route.queue!r}: Redis would "
                    "deliver it again while it runs; raise the task queue's visibility_timeout or lower timeout_seconds",
                    path=f"{node_path(plan, node.name)}.steps[{index}].timeout_seconds",
                )


def check_json(plan: Plan) -> None:
    """The plan is JSON data: no step payload (its own keys) carries NaN, an object or bytes.

    Computes the plan's JSON (``plan.to_json()``, kept), which is what ``dispatch`` stores.

    Raises:
        SpecError: naming the first step that carries what JSON cannot (path ``<node>.steps[<i>]``).
    """
    try:
        plan.to_json()
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        for node in plan.nodes:
            check_json_steps(node.name, [step.payload() for step in node.block.steps])
        raise SpecError(f"the spec carries a value JSON cannot carry: {exc}") from exc


def check_json_steps(node: str, payloads: list[dict[str, Any]]) -> None:
    """Every step's keys are JSON data; the first one that is not is named.

    Raises:
        SpecError: a step carries a value JSON cannot carry (path ``<node>.steps[<i>]``).
    """
    for index, payload in enumerate(payloads):
        try:
            to_json_data(payload, f"step {index} of {node!r}")
        except StepResultError as exc:
            raise SpecError(str(exc).replace("returned", "carries"), path=f"{node}.steps[{index}]") from exc


def check_target(target: str, registry: Registry, step_modules: tuple[str, ...], path: str) -> None:
    """Raise ``UnknownTarget`` unless ``target`` is registered (``module:function`` only among listed modules)."""
    if ":" in target:
        module = target.split(":", 1)[0]
        if module not in step_modules:
            raise UnknownTarget(
                f"target {target!r}: module {module!r} is not listed in NAMEL3SS_CELERY_STEP_MODULES "
                f"(listed: {', '.join(step_modules) or 'none'}); workers resolve module:function only there",
                path=path,
            )
    if registry.step(target) is None:
        known = sorted(d.target for d in registry.steps())
        raise UnknownTarget(
            f"unknown target {target!r}; registered: {', '.join(known[:20]) or 'none'}"
            + (" ..." if len(known) > 20 else ""),
            path=path,
        )


def check_pool(target: str, pool: str, pools: Mapping[str, PoolRoute], path: str, kind: str = "tool") -> None:
    """A step's ``worker_pool`` names a pool of the program, and that pool allows its target (``routing.allowed``)."""
    if pool not in pools:
        known = ", ".join(sorted(pools)) or "none (only a program declares worker_pools)"
        raise CompileError(f"worker_pool {pool!r} is not a pool of this program; pools: {known}", path=path)
    route = pools[pool]
    refused = refusal(pool, kind, target, route.allowed_tools, route.allowed_agents)
    if refused is not None:
        raise CompileError(refused, path=path)


def check_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's context as JSON data (a copy): what its steps receive.

    Raises:
        SpecError: the context is not a mapping (path ``context``), its ``outputs`` is not one
            (``context.outputs``), a value nests too deep (``context.<key>``), or it carries a value
            JSON cannot carry (``context``).
    """
    try:
        checked: dict[str, Any] = to_json_data(context_mapping(context), "context")
    except StepResultError as exc:
        raise SpecError(str(exc), path="context") from exc
    return checked
