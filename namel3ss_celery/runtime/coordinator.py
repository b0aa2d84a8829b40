"""``namel3ss.runtime.coordinator`` here: ``DistributedParallelExecutor`` and its functions, sending blocks to
Celery workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results import ParallelExecutionResult
from ..settings import Settings
from .brokers import broker_settings
from .distributed_executor import DistributedParallelExecutor
from .parallel import StepExecutor

__all__ = [
    "DistributedParallelExecutor",
    "create_distributed_executor",
    "execute_distributed_parallel",
    "get_distributed_executor",
]


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


RUN_KEYS = frozenset({"security_context", "force_distribution", "force_local"})  # execute_parallel_block's


async def execute_distributed_parallel(
    parallel_block: Any, step_executor: StepExecutor | None, context: Mapping[str, Any] | None = None, **kwargs: Any
) -> ParallelExecutionResult:
    """Run one block with the process's distributed executor (``get_distributed_executor()``), as Namel3ss
    does; ``kwargs`` go to its ``execute_parallel_block`` (``force_local``, ``force_distribution``,
    ``security_context``).

    Given any other keyword (``broker_type``, ``broker_config``, ``fallback_to_local``, ...: those of
    ``create_distributed_executor``), the block runs on an executor of its own, made with them and cleaned
    up after.
    """
    run = {k: v for k, v in kwargs.items() if k in RUN_KEYS}
    made = {k: v for k, v in kwargs.items() if k not in RUN_KEYS}
    if not made:
        executor = await get_distributed_executor()
        return await executor.execute_parallel_block(parallel_block, step_executor, context, **run)
    executor = await create_distributed_executor(**made)
    try:
        return await executor.execute_parallel_block(parallel_block, step_executor, context, **run)
    finally:
        await executor.cleanup()
