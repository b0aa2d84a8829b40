"""``namel3ss.runtime.parallel`` here: ``ParallelExecutor`` and ``execute_parallel_steps``, in this process (the
local executor: the workers' own semantics, on asyncio)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..compiler.planning import make_plan
from ..local import LocalExecutor
from ..plan.fields import STEP_VALUE
from ..registry import SHARED, Registry
from ..results import ParallelExecutionResult, RunStatus
from ..spec import ParallelBlockSpec, ParallelStrategy, load_model

logger = logging.getLogger("namel3ss_celery")

StepExecutor = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any] | Any]

LOCAL_TARGET = "namel3ss.step_executor"  # the local registry's name for a call's step executor


@dataclass
class ParallelExecutionContext:
    """The block a step runs in (Namel3ss ``ParallelExecutionContext``): what ``get_current_parallel_context()``
    gives a step executor running in this process. Fields, order and defaults are the Namel3ss ones."""

    execution_id: str
    block_name: str
    strategy: str | ParallelStrategy
    max_concurrency: int
    timeout_seconds: float | None = None
    parent_span_id: str | None = None
    semaphore: asyncio.Semaphore | None = None
    cancel_event: asyncio.Event | None = None
    running_tasks: set[str] = field(default_factory=set)
    completed_tasks: dict[str, Any] = field(default_factory=dict)
    current_concurrency: int = 0
    execution_permissions: str | None = None
    allowed_capabilities: set[str] = field(default_factory=set)
    trace_context: dict[str, Any] = field(default_factory=dict)
    custom_metadata: dict[str, Any] = field(default_factory=dict)


current_parallel_context: ContextVar[ParallelExecutionContext | None] = ContextVar(
    "current_parallel_context", default=None
)


def get_current_parallel_context() -> ParallelExecutionContext | None:
    """The context of the parallel block running in this task (``None`` outside one)."""
    return current_parallel_context.get()


def _enter(block: ParallelBlockSpec, parent_span_id: str | None, security_context: Any) -> None:
    """Make ``block``'s context current, as Namel3ss does for the rest of the calling task."""
    context = ParallelExecutionContext(
        execution_id=str(uuid.uuid4()),
        block_name=block.name,
        strategy=block.strategy,
        max_concurrency=block.max_concurrency or 10,
        timeout_seconds=block.timeout_seconds,
        parent_span_id=parent_span_id,
    )
    if isinstance(security_context, Mapping):
        context.execution_permissions = security_context.get("permission_level")
        context.allowed_capabilities = set(security_context.get("capabilities", []))
    current_parallel_context.set(context)


def block_spec(parallel_block: Any, max_concurrency: int | None, timeout: float | None) -> ParallelBlockSpec:
    """A ``ParallelBlockSpec`` from the Namel3ss dict (or spec object), with the executor's defaults."""
    given = {"max_concurrency": max_concurrency, "timeout_seconds": timeout}
    if isinstance(parallel_block, Mapping):  # the defaults join the dict: validated once, as if written there
        missing = {k: v for k, v in given.items() if v is not None and parallel_block.get(k) is None}
        return load_model(ParallelBlockSpec, {**parallel_block, **missing})
    block = load_model(ParallelBlockSpec, parallel_block)
    defaults = {k: v for k, v in given.items() if v is not None and getattr(block, k) is None}
    if not defaults:
        return block
    # Validated again, as a spec with these values would be (a default of 1e308 seconds is refused too).
    return load_model(ParallelBlockSpec, {**block.model_dump(exclude_unset=True), **defaults})


def raw_block(parallel_block: Any, inline: bool = False, target: str | None = None) -> tuple[Any, list[Any]]:
    """The block with each step that names no target of its own replaced by a placeholder, and those steps'
    values exactly as given: the Namel3ss runtime hands its step executor any value (``"step1"``, ``3``,
    an object of the caller's), and so does this one. A placeholder carries the value's index in the
    returned list (in this process), or, ``inline``, the value itself (for workers: JSON values only,
    refused at dispatch otherwise, naming the step). With ``target``, each placeholder names it (``targeted``
    then has nothing to copy)."""
    base: dict[str, Any]
    if isinstance(parallel_block, Mapping):
        base, raw_steps = dict(parallel_block), list(parallel_block.get("steps") or [])
    elif hasattr(parallel_block, "steps") and not isinstance(parallel_block, ParallelBlockSpec):
        base, raw_steps = _spec_dict(parallel_block), list(parallel_block.steps)
    else:
        return parallel_block, []
    values: list[Any] = []
    steps: list[Any] = []
    for raw in raw_steps:
        if isinstance(raw, Mapping) and (raw.get("target") or raw.get("type")):
            steps.append(raw)  # a registered step target: it runs as such
            continue
        placeholder: dict[str, Any] = {STEP_VALUE: raw if inline else len(values)}
        if target is not None:
            placeholder["target"] = target
        if isinstance(raw, Mapping):
            placeholder.update({k: raw[k] for k in ("name", "timeout_seconds", "worker_pool") if k in raw})
        values.append(raw)
        steps.append(placeholder)
    return {**base, "steps": steps}, values


def _spec_dict(block: Any) -> dict[str, Any]:
    """A Namel3ss spec object's fields as the dict this package loads."""
    names = ("name", "strategy", "max_concurrency", "timeout_seconds", "reduce_function", "fail_fast")
    found = {name: getattr(block, name) for name in names if getattr(block, name, None) is not None}
    strategy = found.get("strategy")
    if strategy is not None and hasattr(strategy, "value"):
        found["strategy"] = strategy.value
    return found


def targeted(block: ParallelBlockSpec, target: str) -> ParallelBlockSpec:
    """Every step without a target of its own runs ``target`` (the Namel3ss step executor)."""
    if all(s.target for s in block.steps):  # placeholders name it already (raw_block)
        return block
    steps = [s if s.target else s.model_copy(update={"target": target}) for s in block.steps]
    return block.model_copy(update={"steps": steps})


class ExecutionStats:
    def __init__(self) -> None:
        self.blocks = self.completed = self.failed = self.steps = 0
        self.total_ms = 0.0
        self.placement: dict[str, int] = {}

    def add(self, result: ParallelExecutionResult) -> None:
        self.blocks += 1
        self.steps += result.total_tasks
        self.completed += result.overall_status == RunStatus.COMPLETED
        self.failed += result.overall_status != RunStatus.COMPLETED
        self.total_ms += result.total_duration_ms or 0.0
        where = str(result.metadata.get("executed_on", "?"))
        self.placement[where] = self.placement.get(where, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_blocks": self.blocks,
            "completed_blocks": self.completed,
            "failed_blocks": self.failed,
            "total_steps": self.steps,
            "average_duration_ms": self.total_ms / self.blocks if self.blocks else 0.0,
            "executed_on": dict(self.placement),
            # the Namel3ss ParallelExecutor's keys
            "total_executions": self.blocks,
            "successful_executions": self.completed,
            "failed_executions": self.failed,
            "total_tasks": self.steps,
        }


def _by_index(step_executor: StepExecutor, values: list[Any]) -> Any:
    """The step executor, called with the step value a placeholder's index names (an ``async`` executor
    stays a coroutine function, so it runs on the event loop, not in a thread)."""
    if inspect.iscoroutinefunction(step_executor):

        async def call_async(index: int, context: dict[str, Any]) -> Any:
            return await step_executor(values[index], context)  # type: ignore[misc]

        return call_async

    block = current_parallel_context.get()  # a thread of the executor's pool does not inherit it

    def call(index: int, context: dict[str, Any]) -> Any:
        current_parallel_context.set(block)
        return step_executor(values[index], context)

    return call


class ParallelExecutor:
    """Runs parallel blocks in this process (Namel3ss ``ParallelExecutor``).

    Args:
        default_max_concurrency: for blocks that set none.
        default_timeout: seconds, for blocks that set none.
    """

    def __init__(self, default_max_concurrency: int = 10, default_timeout: float = 300.0, **_: Any) -> None:
        self.default_max_concurrency = default_max_concurrency
        self.default_timeout = default_timeout
        self._stats = ExecutionStats()

    async def execute_parallel_block(
        self,
        parallel_block: Any,
        step_executor: StepExecutor,
        context: Mapping[str, Any] | None = None,
        security_context: Any = None,
        parent_span_id: str | None = None,
    ) -> ParallelExecutionResult:
        """Run ``parallel_block`` (a dict with ``name``, ``steps``, ``strategy``, ... or a spec) here.

        ``step_executor`` is called as ``await step_executor(step, context)`` (sync functions work
        too) for every step without a ``target`` of its own.

        Raises:
            SpecError: the block is malformed (the field path is named).
        """
        placeholders, values = raw_block(parallel_block, target=LOCAL_TARGET)
        block = block_spec(placeholders, self.default_max_concurrency, self.default_timeout)
        _enter(block, parent_span_id, security_context)
        registry = Registry(parent=SHARED)
        registry.add_step(LOCAL_TARGET, _by_index(step_executor, values))
        result = await LocalExecutor(registry).run(make_plan(targeted(block, LOCAL_TARGET)), context)
        assert isinstance(result, ParallelExecutionResult)
        self._stats.add(result)
        return result

    def get_execution_stats(self) -> dict[str, Any]:
        """Blocks run, completed and failed, steps, average duration, and where they ran; with the Namel3ss
        keys (``total_executions``, ``successful_executions``, ``failed_executions``, ``total_tasks``,
        ``average_duration_ms``)."""
        return self._stats.as_dict()

    async def cleanup(self) -> None:
        """Nothing to release: each block's executor ends with it (kept for code written for Namel3ss)."""


async def execute_parallel_steps(
    steps: list[dict[str, Any]],
    step_executor: StepExecutor,
    strategy: str | ParallelStrategy = "all",
    max_concurrency: int = 10,
    timeout_seconds: float | None = None,
    context: Mapping[str, Any] | None = None,
) -> ParallelExecutionResult:
    """Run ``steps`` in parallel in this process under ``strategy`` (Namel3ss ``execute_parallel_steps``)."""
    block = {"name": "parallel_steps", "steps": steps, "strategy": str(strategy), "max_concurrency": max_concurrency}
    if timeout_seconds is not None:
        block["timeout_seconds"] = timeout_seconds
    return await ParallelExecutor(max_concurrency).execute_parallel_block(block, step_executor, context)
