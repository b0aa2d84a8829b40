"""``namel3ss.runtime.distributed`` here: ``DistributedTaskQueue`` and its brokers, with Celery underneath.

A queue is a Celery queue: ``submit_task`` publishes the Celery task ``n3.queue.task`` on it; a worker
(``start_worker`` in this process, or ``celery -A namel3ss_celery worker -Q <queue>`` anywhere) runs the
task's handler; statuses and results are read from Celery's result backend, from any process::

    queue = await create_distributed_queue("memory", queue_name="images")
    await queue.register_worker("w1", "resizer", {"resize"}, max_concurrent_tasks=2)
    await queue.start_worker("w1", resize)                 # async or sync (task: DistributedTask) -> result
    task_id = await queue.submit_task("resize", {"path": "a.png"})
    task = await queue.get_task_result(task_id, timeout=30)  # a DistributedTask: status, result, error

A task that requires a capability (``submit_task(..., required_capability="gpu")``, or Namel3ss's
``task.metadata["required_capability"]``) goes to the queue ``<queue>.cap.<capability>``, which only workers
with that capability consume (runtime/capabilities.py); until one does, it waits there, ``queued``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from celery.result import AsyncResult

from .. import errors
from ..errors import TaskHandlerFailed, UnknownTask
from .brokers import (
    MemoryMessageBroker,
    MessageBroker,
    RabbitMQMessageBroker,
    RedisMessageBroker,
    create_message_broker,
    wait_ready,
)
from .capabilities import (
    REQUIRED_CAPABILITY,
    capability_queue,
    check_capability,
    required_capability,
)
from .distributed_model import (
    CELERY_STATES,
    FINAL,
    BrokerType,
    DistributedExecutionResult,
    DistributedTask,
    TaskStatus,
    WorkerNode,
    WorkerStatus,
)
from .queue_task import task_handler
from .queue_workers import QueueWorkers

__all__ = [
    "BrokerType",
    "DistributedExecutionResult",
    "DistributedTask",
    "DistributedTaskQueue",
    "MemoryMessageBroker",
    "MessageBroker",
    "RabbitMQMessageBroker",
    "RedisMessageBroker",
    "TaskStatus",
    "WorkerNode",
    "WorkerStatus",
    "create_distributed_queue",
    "create_message_broker",
    "task_handler",
]

logger = logging.getLogger("namel3ss_celery")


class TaskWaitTimeout(errors.TaskWaitTimeout, asyncio.TimeoutError):
    """``errors.TaskWaitTimeout`` as the queue raises it: also an ``asyncio.TimeoutError``, which Namel3ss code
    catches around ``get_task_result`` (on Python 3.10 that is not the built-in ``TimeoutError``)."""


class DistributedTaskQueue(QueueWorkers):
    """A Celery queue of distributed tasks (Namel3ss ``DistributedTaskQueue``).

    Args:
        broker: where tasks travel (``create_message_broker``).
        queue_name: the Celery queue.
        result_timeout: seconds a task may run, and a wait for its result lasts, when the call sets none.
        max_workers: accepted for Namel3ss code (a worker's concurrency is its ``max_concurrent_tasks``).
        enable_tracing, security_manager, enable_security: accepted for Namel3ss code (spans come from
            ``namel3ss_celery.integrations.opentelemetry``).
    """

    def __init__(
        self,
        broker: MessageBroker,
        queue_name: str = "default",
        result_timeout: float = 300.0,
        max_workers: int = 10,
        enable_tracing: bool = True,
        security_manager: Any | None = None,
        enable_security: bool = True,
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.result_timeout = result_timeout
        self.max_workers = max_workers
        self.enable_tracing = enable_tracing
        self.security_manager = security_manager
        self.enable_security = enable_security
        self.pending_tasks: dict[str, DistributedTask] = {}
        self.completed_tasks: dict[str, DistributedTask] = {}
        self.workers: dict[str, WorkerNode] = {}
        self.worker_heartbeats: dict[str, float] = {}
        self.required_capabilities: set[str] = set()  # required by tasks submitted here
        self.stats = {
            "tasks_submitted": 0,
            "tasks_completed": 0,
            "tasks_failed": 0,
            "tasks_retried": 0,
            "workers_active": 0,
        }

    async def start(self) -> None:
        """Connect the broker (it must answer).

        Raises:
            BrokerUnavailable: it does not.
        """
        await self.broker.connect()

    async def stop(self) -> None:
        """Stop the workers started here and disconnect the broker."""
        await self.broker.disconnect()
        for worker in self.workers.values():
            worker.status = WorkerStatus.OFFLINE

    async def submit_task(
        self,
        task_type: str,
        payload: dict[str, Any],
        priority: int = 0,
        timeout_seconds: float | None = None,
        max_retries: int = 3,
        *,
        required_capability: str | None = None,
    ) -> str:
        """Publish a task of ``task_type`` (its handler's name) with ``payload`` (JSON data); its id.

        ``timeout_seconds`` bounds the handler's run on the worker (``result_timeout`` when not given);
        a failed run is retried up to ``max_retries`` times. ``priority`` is Celery's message priority.
        ``required_capability`` (kept as Namel3ss keeps it, in ``metadata["required_capability"]``) sends the
        task to ``<queue>.cap.<capability>``: only a worker with that capability runs it, and until one
        consumes that queue the task waits there, ``queued``.

        Raises:
            BrokerNotConnected: ``start()`` was not called.
            InvalidArgument: ``required_capability`` is not one capability (nothing is published).
        """
        task = DistributedTask(
            task_id=str(uuid.uuid4()),
            task_type=task_type,
            payload=payload,
            priority=priority,
            timeout_seconds=timeout_seconds or self.result_timeout,
            max_retries=max_retries,
            status=TaskStatus.QUEUED,
        )
        if required_capability:
            task.metadata[REQUIRED_CAPABILITY] = check_capability(required_capability, REQUIRED_CAPABILITY)
            self._note_capability(task, required_capability)
        await self.broker.publish_task(self.queue_name, task)
        self.pending_tasks[task.task_id] = task
        self.stats["tasks_submitted"] += 1
        return task.task_id

    async def submit_batch(
        self,
        tasks: list[dict[str, Any]],
        priority: int = 0,
        timeout_seconds: float | None = None,
        max_retries: int = 3,
    ) -> list[str]:
        """Submit each ``{"task_type": ..., "payload": ...}`` of ``tasks`` (with ``"required_capability"`` when it
        needs one); their ids, in order."""
        return [
            await self.submit_task(
                t["task_type"],
                t["payload"],
                priority,
                timeout_seconds,
                max_retries,
                required_capability=t.get(REQUIRED_CAPABILITY),
            )
            for t in tasks
        ]

    def _result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.broker.app)

    async def get_task_status(self, task_id: str) -> TaskStatus:
        """Where the task is now, from the result backend (without waiting).

        Raises:
            UnknownTask: neither submitted here nor known to the result backend.
        """
        state = await asyncio.to_thread(lambda: self._result(task_id).state)
        if state == "PENDING" and task_id not in self.pending_tasks and task_id not in self.completed_tasks:
            raise UnknownTask(task_id, self.queue_name)
        return CELERY_STATES.get(state, TaskStatus.PENDING)

    async def get_task_result(self, task_id: str, timeout: float | None = None) -> DistributedTask:
        """The task once it has ended (completed, or failed after its retries): status, result, error.

        Waits at most ``timeout`` seconds (``result_timeout`` when not given).

        Raises:
            UnknownTask: neither submitted here nor known to the result backend.
            TaskWaitTimeout: it had not ended within ``timeout`` (it goes on; ask again later).
        """
        if task_id in self.completed_tasks:
            return self.completed_tasks[task_id]
        status = await self.get_task_status(task_id)
        task = self.pending_tasks.get(task_id) or DistributedTask(task_id, "unknown", {}, status=status)
        limit = timeout or self.result_timeout
        result = self._result(task_id)
        if not await asyncio.to_thread(wait_ready, result, limit):
            now = await self.get_task_status(task_id)
            capability = required_capability(task.metadata)
            waiting_in = (
                capability_queue(self.queue_name, capability) if capability and now is TaskStatus.QUEUED else ""
            )
            raise TaskWaitTimeout(task_id, task.task_type, limit, now.value, waiting_in)
        self._record(task, result.state, result.result)
        return task

    def _record(self, task: DistributedTask, state: str, value: Any) -> None:
        task.status = CELERY_STATES.get(state, TaskStatus.FAILED)
        if isinstance(value, dict) and task.status is TaskStatus.COMPLETED:
            task.result = value.get("result")
            task.worker_id = value.get("worker_id")
            task.started_at, task.completed_at = value.get("started_at"), value.get("completed_at")
            task.retry_count = int(value.get("retries") or 0)
        elif isinstance(value, TaskHandlerFailed):
            task.error, task.retry_count = value.error, value.retries
            task.completed_at = time.time()
        elif isinstance(value, BaseException):
            task.error = f"{type(value).__name__}: {value}"
            task.completed_at = time.time()
        self.stats["tasks_retried"] += task.retry_count
        task.metadata.setdefault("celery_state", state)
        self.pending_tasks.pop(task.task_id, None)
        if task.status in FINAL:
            self.completed_tasks[task.task_id] = task
            self.stats["tasks_completed" if task.status is TaskStatus.COMPLETED else "tasks_failed"] += 1

    async def get_batch_results(self, task_ids: list[str], timeout: float | None = None) -> dict[str, DistributedTask]:
        """Each task's end, by id; a task whose wait failed is a FAILED task whose error says why."""
        found = await asyncio.gather(*(self.get_task_result(i, timeout) for i in task_ids), return_exceptions=True)
        results: dict[str, DistributedTask] = {}
        for task_id, got in zip(task_ids, found, strict=True):
            if isinstance(got, BaseException):
                if not isinstance(got, Exception):
                    raise got
                got = DistributedTask(task_id, "unknown", {}, status=TaskStatus.FAILED, error=str(got))
            results[task_id] = got
        return results

    async def get_queue_status(self) -> dict[str, Any]:
        """The queue's size on the broker, tasks pending and ended here, workers, and the stats; and under
        ``capability_queues`` the size of each capability queue (``{"<queue>.cap.gpu": 1}``) that a task
        submitted here requires or a worker known here consumes."""
        queue_size = await self.broker.get_queue_size(self.queue_name)
        workers = self.workers.values()
        capabilities = self.required_capabilities.union(*(worker.capabilities for worker in workers))
        capability_queues = {
            name: await self.broker.get_queue_size(name)
            for name in (capability_queue(self.queue_name, c) for c in sorted(capabilities))
        }
        return {
            "queue_name": self.queue_name,
            "queue_size": queue_size,
            "capability_queues": capability_queues,
            "pending_tasks": len(self.pending_tasks),
            "completed_tasks": len(self.completed_tasks),
            "total_workers": len(self.workers),
            "active_workers": sum(w.status is not WorkerStatus.OFFLINE for w in workers),
            "busy_workers": sum(w.status is WorkerStatus.BUSY for w in workers),
            "stats": dict(self.stats),
        }


async def create_distributed_queue(
    broker_type: str | BrokerType = "redis", queue_name: str = "default", **broker_kwargs: Any
) -> DistributedTaskQueue:
    """A started queue on a new broker (``broker_kwargs`` as ``create_message_broker``).

    Raises:
        UnknownBrokerType: ``broker_type`` is not redis, rabbitmq or memory.
        BrokerUnavailable: the broker does not answer.
    """
    queue = DistributedTaskQueue(create_message_broker(broker_type, **broker_kwargs), queue_name)
    await queue.start()
    return queue
