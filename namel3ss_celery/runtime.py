"""The Namel3ss runtime API on namel3ss-celery: the ``namel3ss.runtime`` names, with Celery underneath.

Code written for Namel3ss runs after changing its import line::

    from namel3ss_celery.runtime import execute_parallel_steps, create_distributed_executor

``execute_parallel_steps`` and ``ParallelExecutor`` run in this process (the
local executor, with exactly the workers' semantics); the distributed executor
sends blocks to Celery workers. Its step executor must be something a worker can
find: a registered step, or a module-level function of a module listed in
``NAMEL3SS_CELERY_STEP_MODULES`` (sent as ``module:function``). Anything else
is refused, unless the call asked for local fallback; every result says where
it ran (``metadata["executed_on"]``). The Namel3ss defects are not carried
over: a failed ``all`` block, and a race whose first finisher failed, are
``failed``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import runtime_events
from .apps import check_broker
from .compiler.planning import make_plan
from .errors import BrokerUnavailable, ConfigurationError, SpecError, UnknownTarget
from .extension import Namel3ssCelery
from .local import LocalExecutor
from .plan.fields import STEP_VALUE
from .registry import SHARED, Registry
from .results import ParallelExecutionResult, ParallelTaskResult, RunStatus
from .runtime_events import (  # noqa: F401 - the Namel3ss event names, exported (runtime_events.__all__)
    Event,
    EventBus,
    EventDrivenExecutor,
    EventHandler,
    EventPriority,
    EventType,
    MemoryEventBus,
    RedisEventBus,
    get_event_executor,
    publish_event,
    register_event_workflow,
)
from .settings import Settings
from .spec import ParallelBlockSpec, ParallelStrategy, load_model

__all__ = [
    "DistributedParallelExecutor",
    "ParallelExecutionResult",
    "ParallelExecutor",
    "ParallelStrategy",
    "ParallelTaskResult",
    "create_distributed_executor",
    "execute_distributed_parallel",
    "execute_parallel_steps",
    "get_distributed_executor",
    *runtime_events.__all__,
]

logger = logging.getLogger("namel3ss_celery")

StepExecutor = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any] | Any]

LOCAL_TARGET = "namel3ss.step_executor"  # the local registry's name for a call's step executor


def _block(parallel_block: Any, max_concurrency: int | None, timeout: float | None) -> ParallelBlockSpec:
    """A ``ParallelBlockSpec`` from the Namel3ss dict (or spec object), with the executor's defaults."""
    block = load_model(ParallelBlockSpec, parallel_block)
    defaults: dict[str, Any] = {}
    if block.max_concurrency is None and max_concurrency is not None:
        defaults["max_concurrency"] = max_concurrency
    if block.timeout_seconds is None and timeout is not None:
        defaults["timeout_seconds"] = timeout
    if not defaults:
        return block
    # Validated again, as a spec with these values would be (a default of 1e308 seconds is refused too).
    return load_model(ParallelBlockSpec, {**block.model_dump(exclude_unset=True), **defaults})


def _raw_block(parallel_block: Any, inline: bool = False) -> tuple[Any, list[Any]]:
    """The block with each step that names no target of its own replaced by a placeholder, and those steps'
    values exactly as given: the Namel3ss runtime hands its step executor any value (``"step1"``, ``3``,
    an object of the caller's), and so does this one. A placeholder carries the value's index in the
    returned list (in this process), or, ``inline``, the value itself (for workers: JSON values only,
    refused at dispatch otherwise, naming the step)."""
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


def _targeted(block: ParallelBlockSpec, target: str) -> ParallelBlockSpec:
    """Every step without a target of its own runs ``target`` (the Namel3ss step executor)."""
    steps = [s if s.target else s.model_copy(update={"target": target}) for s in block.steps]
    return block.model_copy(update={"steps": steps})


class _Stats:
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
        }


def _by_index(step_executor: StepExecutor, values: list[Any]) -> Any:
    """The step executor, called with the step value a placeholder's index names (an ``async`` executor
    stays a coroutine function, so it runs on the event loop, not in a thread)."""
    if inspect.iscoroutinefunction(step_executor):

        async def call_async(index: int, context: dict[str, Any]) -> Any:
            return await step_executor(values[index], context)  # type: ignore[misc]

        return call_async

    def call(index: int, context: dict[str, Any]) -> Any:
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
        self._stats = _Stats()

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
        placeholders, values = _raw_block(parallel_block)
        block = _block(placeholders, self.default_max_concurrency, self.default_timeout)
        registry = Registry(parent=SHARED)
        registry.add_step(LOCAL_TARGET, _by_index(step_executor, values))
        result = await LocalExecutor(registry).run(make_plan(_targeted(block, LOCAL_TARGET)), context)
        assert isinstance(result, ParallelExecutionResult)
        self._stats.add(result)
        return result

    def get_execution_stats(self) -> dict[str, Any]:
        """Blocks run, completed and failed, steps, average duration, and where they ran."""
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


class DistributedParallelExecutor:
    """Sends parallel blocks to Celery workers (Namel3ss ``DistributedParallelExecutor``).

    Made the Namel3ss way, ``DistributedParallelExecutor(broker_type="redis", broker_config={"redis_url":
    ...})`` then ``await executor.initialize()``, or on an installation of your own,
    ``DistributedParallelExecutor(n3)``.

    Args:
        broker_type: ``redis``, ``rabbitmq`` or ``memory`` (the embedded default); or a ``Namel3ssCelery``.
        broker_config: ``redis_url`` (redis; also results and coordination), ``amqp_url`` (rabbitmq, with
            ``redis_url`` for results), ``result_backend``.
        default_queue: the Celery queue steps go to when given (workers must consume it); by default the
            app's own default queue (``celery``), which ``celery -A namel3ss_celery worker`` consumes.
        fallback_to_local: run in this process when the step executor cannot be sent to workers, or the
            broker cannot be reached at ``initialize()`` (off by default: a refusal is an error, unlike
            Namel3ss, which fell back silently).
        max_distributed_tasks: blocks with more steps are refused (a ``SpecError``).
        distributed_timeout: seconds to wait for a distributed block.
        enable_auto_scaling: accepted for Namel3ss code; scaling is the worker pools' (``--autoscale``, KEDA).
        n3: the installation to dispatch through (instead of ``broker_type``).
        local_threshold: the Namel3ss coordinator's rule, as an explicit mode: blocks with fewer steps run
            in this process. Off by default; always reported in ``metadata["placement"]``.
        timeout: seconds to wait for a distributed block (the same as ``distributed_timeout``).
    """

    def __init__(
        self,
        broker_type: str | Namel3ssCelery = "redis",
        broker_config: Mapping[str, Any] | None = None,
        default_queue: str | None = None,
        fallback_to_local: bool = False,
        max_distributed_tasks: int = 1000,
        distributed_timeout: float = 600.0,
        enable_auto_scaling: bool = True,
        *,
        n3: Namel3ssCelery | None = None,
        local_threshold: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(broker_type, Namel3ssCelery):
            n3, broker_type = broker_type, "redis"
        self.broker_type = broker_type
        self.broker_config = dict(broker_config or {})
        self.default_queue = default_queue
        self.fallback_to_local = fallback_to_local
        self.max_distributed_tasks = max_distributed_tasks
        self.distributed_timeout = distributed_timeout if timeout is None else timeout
        self.enable_auto_scaling = enable_auto_scaling
        self.local_threshold = local_threshold
        self._n3 = n3
        self._stats = _Stats()
        self.execution_stats = {
            "total_executions": 0,
            "local_executions": 0,
            "distributed_executions": 0,
            "failed_distributions": 0,
            "average_distribution_overhead_ms": 0.0,
        }

    @property
    def timeout(self) -> float:
        return self.distributed_timeout

    @property
    def n3(self) -> Namel3ssCelery:
        """The installation blocks go through, made from ``broker_type`` and ``broker_config`` on first use."""
        if self._n3 is None:
            self._n3 = Namel3ssCelery(settings=broker_settings(self.broker_type, self.broker_config))
            if self.default_queue:
                self._n3.app.conf.task_default_queue = self.default_queue
        return self._n3

    async def initialize(self) -> None:
        """Connect: make the installation and check that its broker answers.

        Raises:
            BrokerUnavailable: the broker cannot be reached (unless ``fallback_to_local``: blocks then run here).
            ConfigurationError: an unknown broker type, or a URL it needs is missing.
        """
        n3 = self.n3
        if n3.embedded_worker is None:
            try:
                await asyncio.to_thread(check_broker, n3.app)
            except BrokerUnavailable:
                if not self.fallback_to_local:
                    raise
                self.local_threshold = sys.maxsize  # every block runs here, and says why
                logger.warning("the broker cannot be reached: blocks run in this process (fallback_to_local)")

    def target_of(self, step_executor: StepExecutor) -> str:
        """The name workers know ``step_executor`` by.

        Raises:
            UnknownTarget: it is neither registered nor a module-level function of a listed module.
        """
        self.n3.load_step_modules()
        for definition in self.n3.registry.steps():
            if definition.function is step_executor:
                return definition.target
        module = getattr(step_executor, "__module__", None)
        name = getattr(step_executor, "__qualname__", "")
        listed = module in self.n3.settings.step_modules
        if listed and "." not in name and getattr(sys.modules.get(module or ""), name, None) is step_executor:
            return f"{module}:{name}"
        what = "a lambda" if name == "<lambda>" else ("a nested function" if "." in name else repr(step_executor))
        raise UnknownTarget(
            f"step executor {what} cannot be sent to workers: register it with @step('name'), or make it a "
            f"module-level function of a module in NAMEL3SS_CELERY_STEP_MODULES "
            f"(listed: {', '.join(self.n3.settings.step_modules) or 'none'}; its module: {module})"
        )

    async def execute_parallel_block(
        self,
        parallel_block: Any,
        step_executor: StepExecutor,
        context: Mapping[str, Any] | None = None,
        security_context: Any = None,
        force_distribution: bool = False,
        force_local: bool = False,
    ) -> ParallelExecutionResult:
        """Run the block on workers (or here, when asked); the result says where and why.

        Raises:
            UnknownTarget: the step executor cannot be sent to workers and no local fallback was asked.
            WaitTimeout: the block did not end within the executor's ``timeout``.
        """
        block = _block(_raw_block(parallel_block, inline=True)[0], None, None)
        if len(block.steps) > self.max_distributed_tasks:
            raise SpecError(
                f"{len(block.steps)} steps, more than max_distributed_tasks ({self.max_distributed_tasks})",
                path=f"{block.name}.steps",
            )
        started = time.monotonic()
        placement = "distributed"
        if force_local:
            placement = "local (force_local)"
        elif self.local_threshold is not None and not force_distribution and len(block.steps) < self.local_threshold:
            placement = f"local (fewer than {self.local_threshold} steps)"
        target = None
        if not placement.startswith("local"):
            try:
                target = self.target_of(step_executor)
            except UnknownTarget as exc:
                if not self.fallback_to_local:
                    raise
                placement = f"local (fallback_to_local: {exc})"
        if target is None:
            result = await ParallelExecutor(default_timeout=self.timeout).execute_parallel_block(
                parallel_block, step_executor, context
            )
        else:
            handle = self.n3.dispatch(_targeted(block, target), context=context)
            found = await handle.aget(timeout=self.timeout)
            assert isinstance(found, ParallelExecutionResult)
            result = found
        result.metadata["placement"] = placement
        self._stats.add(result)
        self._count(placement, time.monotonic() - started)
        return result

    def _count(self, placement: str, seconds: float) -> None:
        stats = self.execution_stats
        stats["total_executions"] += 1
        if placement.startswith("local"):
            stats["local_executions"] += 1
            if "fallback_to_local" in placement:
                stats["failed_distributions"] += 1
            return
        stats["distributed_executions"] += 1
        done = stats["distributed_executions"]
        stats["average_distribution_overhead_ms"] += (seconds * 1000 - stats["average_distribution_overhead_ms"]) / done

    def get_execution_stats(self) -> dict[str, Any]:
        """Namel3ss's shape (``distributed``, ``local``, ``combined``), plus blocks run, completed and failed,
        steps, average duration, and where they ran."""
        stats = dict(self.execution_stats)
        local = {"total_executions": stats["local_executions"]}
        return {
            **self._stats.as_dict(),
            "distributed": stats,
            "local": local,
            "combined": {
                "total_executions": stats["total_executions"],
                "distribution_ratio": stats["distributed_executions"] / max(1, stats["total_executions"]),
            },
        }

    async def cleanup(self) -> None:
        """Close the connections this executor opened."""
        if self._n3 is not None:
            self._n3.close()


def broker_settings(broker_type: str, broker_config: Mapping[str, Any] | None) -> Settings:
    """Settings for a Namel3ss ``broker_type`` and ``broker_config`` (step modules and the program from the
    environment).

    Raises:
        ConfigurationError: an unknown broker type, or a URL the broker type needs is missing.
    """
    config = dict(broker_config or {})
    env = Settings.from_env()
    redis_url = config.get("redis_url") or os.environ.get("CELERY_RESULT_BACKEND")
    if broker_type == "redis":
        broker = config.get("redis_url") or env.broker_url
        if not broker:
            raise ConfigurationError("broker_type 'redis' needs broker_config['redis_url']", setting="redis_url")
    elif broker_type == "rabbitmq":
        broker = config.get("amqp_url")
        if not broker:
            raise ConfigurationError("broker_type 'rabbitmq' needs broker_config['amqp_url']", setting="amqp_url")
        if not (config.get("result_backend") or redis_url):
            raise ConfigurationError(
                "broker_type 'rabbitmq' needs a Redis for results: broker_config['redis_url']", setting="redis_url"
            )
    elif broker_type == "memory":
        broker = None
    else:
        raise ConfigurationError(f"unknown broker_type {broker_type!r}; use redis, rabbitmq or memory", "broker_type")
    return Settings(
        broker_url=broker,
        result_backend=(config.get("result_backend") or redis_url) if broker else None,
        step_modules=env.step_modules,
        coordination_url=env.coordination_url,
    )


async def create_distributed_executor(
    broker_type: str = "redis", broker_config: Mapping[str, Any] | None = None, **kwargs: Any
) -> DistributedParallelExecutor:
    """A distributed executor on ``broker_type`` ``redis``, ``rabbitmq`` or ``memory`` (embedded), initialized.

    ``broker_config`` keys: ``redis_url`` (redis; also the result backend and coordination store
    unless ``result_backend`` is given), ``amqp_url`` (rabbitmq, with ``redis_url`` for results).
    Other keyword arguments go to ``DistributedParallelExecutor`` (``default_queue``, ``fallback_to_local``,
    ``local_threshold``, ``timeout``, ...). Step modules come from ``NAMEL3SS_CELERY_STEP_MODULES``.

    Raises:
        ConfigurationError: an unknown broker type, or a URL the broker type needs is missing.
    """
    broker_settings(broker_type, broker_config)  # refused here, before anything connects
    executor = DistributedParallelExecutor(broker_type, broker_config, **kwargs)
    await executor.initialize()
    return executor


_distributed: DistributedParallelExecutor | None = None


async def get_distributed_executor() -> DistributedParallelExecutor:
    """The process's distributed executor (``create_distributed_executor()`` with the environment's broker)."""
    global _distributed
    if _distributed is None:
        env = Settings.from_env()
        kind = "memory" if env.embedded else ("rabbitmq" if str(env.broker_url).startswith("amqp") else "redis")
        config = {"amqp_url": env.broker_url} if kind == "rabbitmq" else {"redis_url": env.broker_url}
        _distributed = await create_distributed_executor(kind, config if kind != "memory" else None)
    return _distributed


async def execute_distributed_parallel(
    parallel_block: Any, step_executor: StepExecutor, context: Mapping[str, Any] | None = None, **kwargs: Any
) -> ParallelExecutionResult:
    """Create a distributed executor (``kwargs`` as ``create_distributed_executor``), run one block, clean up."""
    run_keys = {"force_distribution", "force_local", "security_context"}
    executor = await create_distributed_executor(
        **{k: v for k, v in kwargs.items() if k not in run_keys},
    )
    try:
        return await executor.execute_parallel_block(
            parallel_block, step_executor, context, **{k: v for k, v in kwargs.items() if k in run_keys}
        )
    finally:
        await executor.cleanup()
