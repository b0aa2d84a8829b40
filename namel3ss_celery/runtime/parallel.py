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
from ..engine.inline import fits
from ..local import LocalExecutor
from ..registry import BUILTIN_REDUCERS, SHARED, Registry
from ..results import ParallelExecutionResult, ParallelTaskResult, RunStatus, WorkflowResult
from ..spec import ParallelBlockSpec, ParallelStrategy, StepSpec
from .blocks import Unreduced, block_data, block_spec, namel3ss_shaped, raw_block, targeted, unreduced

__all__ = [
    "LOCAL_TARGET",
    "ParallelExecutionContext",
    "ParallelExecutionResult",
    "ParallelExecutor",
    "ParallelStrategy",
    "ParallelTaskResult",
    "current_parallel_context",
    "execute_parallel_steps",
    "get_current_parallel_context",
]

logger = logging.getLogger("namel3ss_celery")

StepExecutor = Callable[[Any, dict[str, Any]], Awaitable[Any] | Any]
OUTPUTS = "outputs"  # the key under which the engine gives a step the outputs of a workflow's earlier nodes

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


def _enter(block: ParallelBlockSpec, strategy: str, parent_span_id: str | None, security_context: Any) -> None:
    """Make ``block``'s context current, as Namel3ss does for the rest of the calling task."""
    context = ParallelExecutionContext(
        execution_id=str(uuid.uuid4()),
        block_name=block.name,
        strategy=ParallelStrategy(strategy),
        max_concurrency=block.max_concurrency or 10,
        timeout_seconds=block.timeout_seconds,
        parent_span_id=parent_span_id,
    )
    if isinstance(security_context, Mapping):
        context.execution_permissions = security_context.get("permission_level")
        context.allowed_capabilities = set(security_context.get("capabilities", []))
    current_parallel_context.set(context)


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


def _by_index(step_executor: StepExecutor, values: list[Any], outputs: bool) -> Any:
    """The step executor, called with the step value a placeholder's index names, and the context the call
    was given (``outputs`` only when it had that key: the engine adds it for workflows). An ``async``
    executor stays a coroutine function, so it runs on the event loop, not in a thread."""

    def given(context: dict[str, Any]) -> dict[str, Any]:
        return context if outputs else {k: v for k, v in context.items() if k != OUTPUTS}

    if inspect.iscoroutinefunction(step_executor):

        async def call_async(index: int, context: dict[str, Any]) -> Any:
            return await step_executor(values[index], given(context))  # type: ignore[misc]

        return call_async

    block = current_parallel_context.get()  # a thread of the executor's pool does not inherit it

    def call(index: int, context: dict[str, Any]) -> Any:
        current_parallel_context.set(block)
        return step_executor(values[index], given(context))

    return call


class ParallelExecutor:
    """Runs parallel blocks in this process (Namel3ss ``ParallelExecutor``), with its constructor.

    Args:
        default_max_concurrency: for blocks that set none.
        default_timeout: seconds, for blocks that set none.
        enable_tracing: accepted for Namel3ss code (spans come from ``namel3ss_celery.integrations.opentelemetry``).
        enable_security: accepted for Namel3ss code; so is ``security_manager``.
        thread_pool_size: accepted for Namel3ss code (sync step executors run in the local executor's threads).
        security_manager: see ``enable_security``.
    """

    def __init__(
        self,
        default_max_concurrency: int = 10,
        default_timeout: float = 300.0,
        enable_tracing: bool = True,
        enable_security: bool = True,
        thread_pool_size: int = 4,
        security_manager: Any | None = None,
    ) -> None:
        self.default_max_concurrency = default_max_concurrency
        self.default_timeout = default_timeout
        self.enable_tracing = enable_tracing
        self.enable_security = enable_security
        self.thread_pool_size = thread_pool_size
        self.security_manager = security_manager
        self._stats = ExecutionStats()

    async def execute_parallel_block(
        self,
        parallel_block: Any,
        step_executor: StepExecutor | None,
        context: Mapping[str, Any] | None = None,
        security_context: Any = None,
        parent_span_id: str | None = None,
    ) -> ParallelExecutionResult:
        """Run ``parallel_block`` (a dict with ``name``, ``steps``, ``strategy``, ... or a spec) here.

        ``step_executor`` is called as ``await step_executor(step, context)`` (sync functions work too) for
        every step, with the step as it was given (a dict with a ``type`` or ``target`` key too). With
        ``None``, each step runs the registered step its ``target`` (or ``type``) names, as in a program;
        so does each step of a ``ParallelBlockSpec`` that names one. A map_reduce block without a
        ``reduce_function``, or with one that is neither built in nor registered, runs as Namel3ss runs it
        (the ``all`` result; the results as a list).

        Raises:
            SpecError: the block is malformed (the field path is named).
            CompileError: with no step executor, a step names no registered step.
        """
        registry = Registry(parent=SHARED)

        def read(shared: StepSpec | None) -> tuple[str | None, list[Any], Unreduced | None, ParallelBlockSpec]:
            """The block as given: its strategy, the steps' values, how Namel3ss leaves it unreduced, the spec."""
            values: list[Any] = []
            if step_executor is None:
                placeholders = block_data(parallel_block)
            else:
                placeholders, values = raw_block(parallel_block, target=LOCAL_TARGET, shared=shared)
            runnable, later = unreduced(placeholders, lambda name: known_reducer(name, registry))
            block = block_spec(runnable, self.default_max_concurrency, self.default_timeout)
            return _strategy_of(placeholders), values, later, block

        # An async step executor may run its block inline (engine.inline): checked once the block is read.
        inline = step_executor is not None and inspect.iscoroutinefunction(step_executor)
        strategy, values, later, block = read(SHARED_PLACEHOLDER if inline else None)
        if inline and not (fits(block) and all(step.target == LOCAL_TARGET for step in block.steps)):
            inline = False  # on the conductor, whose steps find their values by the index in their placeholder
            strategy, values, later, block = read(None)
        _enter(block, strategy or str(block.strategy), parent_span_id, security_context)
        result: ParallelExecutionResult | WorkflowResult
        if step_executor is not None and inline:  # nothing only the conductor does: a twentieth of the cost
            call = _by_index(step_executor, values, True)  # the context as given: run_inline adds no outputs
            registry.add_step(LOCAL_TARGET, call)
            result = await LocalExecutor(registry).run_inline(block, call, context)
        else:
            if step_executor is not None:
                outputs = context is not None and OUTPUTS in context
                registry.add_step(LOCAL_TARGET, _by_index(step_executor, values, outputs))
                block = targeted(block, LOCAL_TARGET)
            result = await LocalExecutor(registry).run(make_plan(block), context)
        assert isinstance(result, ParallelExecutionResult)
        namel3ss_shaped(result, later)
        self._stats.add(result)
        return result

    def get_execution_stats(self) -> dict[str, Any]:
        """Blocks run, completed and failed, steps, average duration, and where they ran; with the Namel3ss
        keys (``total_executions``, ``successful_executions``, ``failed_executions``, ``total_tasks``,
        ``average_duration_ms``)."""
        return self._stats.as_dict()

    async def cleanup(self) -> None:
        """Nothing to release: each block's executor ends with it (kept for code written for Namel3ss)."""


SHARED_PLACEHOLDER = StepSpec(target=LOCAL_TARGET)  # every step of a block run inline that keeps no key


def known_reducer(name: str, registry: Registry) -> bool:
    """``name`` is a built-in reducer, or one registered (``@reducer``)."""
    return name in BUILTIN_REDUCERS or registry.reducer(name) is not None


def _strategy_of(block: Any) -> str | None:
    """The strategy a block was given with (``None``: the default, or a spec object's own)."""
    if isinstance(block, ParallelBlockSpec):
        return str(block.strategy)
    value = block.get("strategy") if isinstance(block, Mapping) else None
    return str(getattr(value, "value", value)) if value is not None else None


async def execute_parallel_steps(
    steps: list[Any],
    step_executor: StepExecutor,
    strategy: str | ParallelStrategy = "all",
    max_concurrency: int = 10,
    timeout_seconds: float | None = None,
    context: Mapping[str, Any] | None = None,
) -> ParallelExecutionResult:
    """Run ``steps`` in parallel in this process under ``strategy`` (Namel3ss ``execute_parallel_steps``):
    each step, whatever its value, goes to ``step_executor`` as it was given."""
    block: dict[str, Any] = {
        "name": "parallel_steps",
        "steps": steps,
        "strategy": getattr(strategy, "value", strategy),
        "max_concurrency": max_concurrency,
    }
    if timeout_seconds is not None:
        block["timeout_seconds"] = timeout_seconds
    return await ParallelExecutor(max_concurrency).execute_parallel_block(block, step_executor, context)
