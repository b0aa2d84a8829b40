"""The workers of a ``DistributedTaskQueue``: registered and started in this process, or found on the broker
(``discover_workers``); each consumes its queue and one queue per capability it has (runtime/capabilities.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import UnknownWorker
from .brokers import MessageBroker
from .capabilities import capability_queue, check_capabilities, worker_queues
from .distributed_model import DistributedTask, WorkerNode, WorkerStatus
from .nodes import celery_workers, tracked
from .queue_task import TaskHandler

logger = logging.getLogger("namel3ss_celery")


class QueueWorkers:
    """The worker half of ``DistributedTaskQueue`` (which sets these attributes)."""

    broker: MessageBroker
    queue_name: str
    workers: dict[str, WorkerNode]
    worker_heartbeats: dict[str, float]
    required_capabilities: set[str]
    stats: dict[str, int]

    def _note_capability(self, task: DistributedTask, capability: str) -> None:
        self.required_capabilities.add(capability)
        if self.workers and not any(capability in worker.capabilities for worker in self.workers.values()):
            logger.warning(
                "task %s (%s) requires capability %r, which no worker known here offers: it waits in queue %r "
                "until a worker with it consumes that queue",
                task.task_id,
                task.task_type,
                capability,
                capability_queue(self.queue_name, capability),
            )

    async def register_worker(
        self, worker_id: str, worker_type: str, capabilities: set[str], max_concurrent_tasks: int = 1
    ) -> None:
        """Record a worker node (``start_worker`` then starts it); it will run the tasks that require one of its
        ``capabilities``, and those that require none.

        Raises:
            InvalidArgument: a capability cannot name a queue (``capabilities`` is named).
        """
        checked = check_capabilities(capabilities)
        self.workers[worker_id] = WorkerNode(worker_id, worker_type, checked, max_concurrent_tasks)
        self.worker_heartbeats[worker_id] = time.time()
        self.stats["workers_active"] += 1

    async def start_worker(self, worker_id: str, task_handler: TaskHandler) -> None:
        """Start a registered worker: a Celery worker in this process that consumes this queue, and the queue of
        each of its capabilities (``worker_queues``), and hands every task to ``task_handler``
        (``(DistributedTask) -> result``, sync or ``async def``).

        Raises:
            UnknownWorker: ``worker_id`` was not registered.
            BrokerNotConnected: ``start()`` was not called.
        """
        worker = self.workers.get(worker_id)
        if worker is None:
            raise UnknownWorker(worker_id)

        worker.metadata.update(
            queue=self.queue_name,
            queues=worker_queues(self.queue_name, worker.capabilities),
            hostname=self.broker.worker_hostname(worker_id),
        )
        await self.broker.consume_tasks(
            self.queue_name,
            tracked(worker, task_handler),
            worker_id=worker_id,
            concurrency=worker.max_concurrent_tasks,
            capabilities=worker.capabilities,
        )
        worker.status = WorkerStatus.IDLE

    async def discover_workers(self, timeout: float = 1.0) -> list[WorkerNode]:
        """The Celery workers consuming this queue or one of its capability queues now, on any host (``celery
        worker -Q`` included), as worker nodes, recorded in ``workers``; a node's ``capabilities`` are those whose
        queues it consumes. They answer Celery's remote control within ``timeout`` seconds."""
        found = await asyncio.to_thread(celery_workers, self.broker.app, self.queue_name, timeout)
        self.workers.update({node.worker_id: node for node in found})
        return found
