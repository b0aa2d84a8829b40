"""``DistributedParallelExecutor``: the Namel3ss distributed executor, sending blocks to Celery workers (its
functions, as Namel3ss has them, are in ``coordinator``)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..apps import check_broker
from ..errors import BrokerUnavailable, SpecError, UnknownTarget
from ..extension import Namel3ssCelery
from ..results import ParallelExecutionResult
from ..spec import ParallelBlockSpec
from ..worker.embedded import EmbeddedWorker
from .blocks import Unreduced, block_data, block_spec, namel3ss_shaped, raw_block, targeted, unreduced
from .brokers import broker_settings
from .distributed_model import WorkerNode, WorkerStatus
from .nodes import start_step_worker
from .parallel import ExecutionStats, ParallelExecutor, StepExecutor, known_reducer

logger = logging.getLogger("namel3ss_celery")


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
        self._stats = ExecutionStats()
        self.local_executor = ParallelExecutor(default_timeout=self.distributed_timeout)  # blocks run here
        self._queue_available = False  # initialize() reached the broker
        self.workers: dict[str, WorkerNode] = {}
        self._embedded: list[EmbeddedWorker] = []
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
                return
        self._queue_available = True

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
        step_executor: StepExecutor | None,
        context: Mapping[str, Any] | None = None,
        security_context: Any = None,
        force_distribution: bool = False,
        force_local: bool = False,
    ) -> ParallelExecutionResult:
        """Run the block on workers (or here, when asked); the result says where and why.

        Each step goes to ``step_executor`` as it was given; with ``None``, each runs the registered step its
        ``target`` (or ``type``) names, as in a program.

        Raises:
            UnknownTarget: the step executor cannot be sent to workers and no local fallback was asked.
            WaitTimeout: the block did not end within the executor's ``timeout``.
        """
        self.execution_stats["total_executions"] += 1
        raw = block_data(parallel_block) if step_executor is None else raw_block(parallel_block, inline=True)[0]
        runnable, later = unreduced(raw, lambda name: True)  # a map_reduce block without a reducer: as all
        block = block_spec(runnable, None, None)
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
        if placement == "distributed" and step_executor is not None:
            try:
                block = targeted(block, self.target_of(step_executor))
            except UnknownTarget as exc:
                if not self.fallback_to_local:
                    self.execution_stats["failed_distributions"] += 1
                    raise
                placement = f"local (fallback_to_local: {exc})"
        if placement.startswith("local"):
            result = await self.local_executor.execute_parallel_block(
                parallel_block, step_executor, context, security_context
            )
        else:
            result = await self._distribute(block, later, context)
        result.metadata["placement"] = placement
        self._stats.add(result)
        self._count(placement, time.monotonic() - started)
        return result

    async def _distribute(
        self, block: ParallelBlockSpec, later: Unreduced | None, context: Mapping[str, Any] | None
    ) -> ParallelExecutionResult:
        """Dispatch ``block`` and wait for its result (a reducer the workers' registry lacks: as Namel3ss)."""
        self.n3.load_step_modules()
        block, unknown = unreduced(block, lambda name: known_reducer(name, self.n3.registry))
        try:
            found = await self.n3.dispatch(block, context=context).aget(timeout=self.timeout)
        except Exception:
            self.execution_stats["failed_distributions"] += 1
            raise
        assert isinstance(found, ParallelExecutionResult)
        return namel3ss_shaped(found, later or unknown)

    def _count(self, placement: str, seconds: float) -> None:
        stats = self.execution_stats
        if placement.startswith("local"):
            stats["local_executions"] += 1
            if "fallback_to_local" in placement:
                stats["failed_distributions"] += 1
            return
        stats["distributed_executions"] += 1
        done = stats["distributed_executions"]
        stats["average_distribution_overhead_ms"] += (seconds * 1000 - stats["average_distribution_overhead_ms"]) / done

    def get_execution_stats(self) -> dict[str, Any]:
        """Namel3ss's shape: ``distributed`` (this executor's counts), ``local`` (its local executor's stats,
        with the keys of ``ParallelExecutor.get_execution_stats()``), ``combined`` (counted as Namel3ss counts:
        ``total_executions`` adds the local executor's to this executor's, so a block run here counts in
        both), ``queue_status`` once ``initialize()`` reached the broker; plus this package's keys: blocks
        run, completed and failed, steps, average duration, and where they ran."""
        distributed = dict(self.execution_stats)
        local = self.local_executor.get_execution_stats()
        stats = {
            **self._stats.as_dict(),
            "distributed": distributed,
            "local": local,
            "combined": {
                "total_executions": distributed["total_executions"] + local["total_executions"],
                "distribution_ratio": distributed["distributed_executions"] / max(1, distributed["total_executions"]),
            },
        }
        if self._queue_available:
            stats["queue_status"] = {"available": True}
        return stats

    async def register_worker(
        self,
        worker_id: str,
        worker_type: str = "namel3ss_worker",
        capabilities: list[str] | None = None,
        max_concurrent_tasks: int = 1,
    ) -> None:
        """Record a worker node; ``start_worker`` starts it."""
        self.workers[worker_id] = WorkerNode(worker_id, worker_type, set(capabilities or []), max_concurrent_tasks)

    async def start_worker(self, worker_id: str, step_executor: StepExecutor) -> None:
        """Start a registered worker: a Celery worker in this process (``worker_id@host``) that consumes the
        executor's queue and runs ``step_executor`` for the blocks sent with it.

        Raises:
            UnknownWorker: ``worker_id`` was not registered.
        """
        self._embedded.append(await start_step_worker(self.n3, self.workers, worker_id, step_executor))

    async def cleanup(self) -> None:
        """Stop the workers started here and close the connections this executor opened."""
        await self.local_executor.cleanup()
        workers, self._embedded = self._embedded, []
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        for node in self.workers.values():
            node.status = WorkerStatus.OFFLINE
        if self._n3 is not None:
            self._n3.close()
