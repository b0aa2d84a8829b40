"""Worker nodes of the distributed executor: Celery workers started in this process for its step executor."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from typing import Any

from ..errors import UnknownWorker
from ..extension import Namel3ssCelery
from ..worker.embedded import EmbeddedWorker
from .capabilities import consumed_capabilities
from .distributed_model import DistributedTask, WorkerNode, WorkerStatus
from .parallel import StepExecutor
from .queue_task import TaskHandler


async def start_step_worker(
    n3: Namel3ssCelery, workers: dict[str, WorkerNode], worker_id: str, step_executor: StepExecutor
) -> EmbeddedWorker:
    """Start the registered worker ``worker_id``: a Celery worker (threads) in this process, named
    ``worker_id@host``, consuming ``n3``'s default queue, that knows ``step_executor`` (registered as the step
    ``namel3ss.worker.<worker_id>`` unless it is a step already).

    Raises:
        UnknownWorker: ``worker_id`` was not registered.
        ConfigurationError: the worker did not start.
    """
    node = workers.get(worker_id)
    if node is None:
        raise UnknownWorker(worker_id)
    n3.load_step_modules()
    if not any(definition.function is step_executor for definition in n3.registry.steps()):
        n3.step(f"namel3ss.worker.{worker_id}")(step_executor)
    hostname = f"{worker_id}@{socket.gethostname()}"
    queue = str(n3.app.conf.task_default_queue)
    worker = EmbeddedWorker(n3.app, max(1, node.max_concurrent_tasks), hostname=hostname, queues=[queue])
    await asyncio.to_thread(worker.start)
    node.status = WorkerStatus.IDLE
    node.metadata.update(hostname=hostname, queue=queue)
    return worker


def celery_workers(app: Any, queue_name: str, timeout: float = 1.0) -> list[WorkerNode]:
    """The Celery workers consuming ``queue_name`` or one of its capability queues now, on any host, as worker
    nodes: their name, capabilities (those whose queues they consume), pool size, running tasks (busy or idle).
    Workers answer Celery's remote control within ``timeout`` seconds."""
    queues = app.control.inspect(timeout=timeout).active_queues() or {}
    consumed = {host: [str(q.get("name")) for q in found] for host, found in queues.items()}
    capabilities = {host: set(consumed_capabilities(queue_name, names)) for host, names in consumed.items()}
    hosts = [host for host, names in consumed.items() if queue_name in names or capabilities[host]]
    if not hosts:
        return []
    asked = app.control.inspect(destination=hosts, timeout=timeout, limit=len(hosts))
    stats, active = asked.stats() or {}, asked.active() or {}
    nodes = []
    for host in sorted(hosts):
        running = {str(task.get("id")) for task in active.get(host, [])}
        pool = stats.get(host, {}).get("pool", {})
        nodes.append(
            WorkerNode(
                worker_id=host,
                worker_type="celery",
                capabilities=capabilities[host],
                max_concurrent_tasks=int(pool.get("max-concurrency") or 1),
                current_tasks=running,
                status=WorkerStatus.BUSY if running else WorkerStatus.IDLE,
                metadata={
                    "hostname": host,
                    "queue": queue_name,
                    "queues": consumed[host],
                    "pool": pool.get("implementation"),
                },
            )
        )
    return nodes


def tracked(worker: WorkerNode, handler: TaskHandler) -> TaskHandler:
    """``handler``, keeping ``worker``'s running tasks, status and heartbeat (sync stays sync, so that a task's
    timeout bounds it in a thread; async stays async)."""

    def enter(task: DistributedTask) -> None:
        task.worker_id = worker.metadata.get("hostname", worker.worker_id)
        worker.current_tasks.add(task.task_id)
        worker.status = WorkerStatus.BUSY
        worker.last_heartbeat = time.time()

    def leave(task: DistributedTask) -> None:
        worker.current_tasks.discard(task.task_id)
        if not worker.current_tasks:
            worker.status = WorkerStatus.IDLE

    if inspect.iscoroutinefunction(handler):

        async def handle_async(task: DistributedTask) -> Any:
            enter(task)
            try:
                return await handler(task)
            finally:
                leave(task)

        return handle_async

    def handle(task: DistributedTask) -> Any:
        enter(task)
        try:
            return handler(task)
        finally:
            leave(task)

    return handle
