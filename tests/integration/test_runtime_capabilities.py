"""Capability routing of the Namel3ss distributed queue, with real workers: a task that requires ``gpu`` runs only
on a worker with that capability, a task that requires nothing runs on any worker, and a task whose capability no
worker offers waits, ``queued``, until a worker with it comes. On the memory broker (workers in this process) and
on Redis and RabbitMQ (``celery worker -Q <queue>,<queue>.cap.gpu`` subprocesses of the default app)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery.runtime import (
    DistributedTask,
    DistributedTaskQueue,
    TaskStatus,
    create_distributed_queue,
    worker_queues,
)

from .queue_handlers import serve
from .workers import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HANDLERS = "tests.integration.queue_handlers"
WAIT = 30

StartWorker = Callable[[str, set[str]], Awaitable[str]]  # (name, capabilities) -> the worker's hostname


async def ran_on(queue: DistributedTaskQueue, ids: list[str]) -> list[str]:
    """The worker that ran each task (its ``worker_id``, the Celery hostname), once all completed."""
    done = await queue.get_batch_results(ids, timeout=WAIT)
    assert [done[i].status for i in ids] == [TaskStatus.COMPLETED] * len(ids), [done[i].error for i in ids]
    return [str(done[i].worker_id) for i in ids]


async def submit(queue: DistributedTaskQueue, count: int, capability: str | None = None) -> list[str]:
    return [await queue.submit_task("n3test.double", {"x": n}, required_capability=capability) for n in range(count)]


async def a_gpu_task_waits_for_a_gpu_worker(queue: DistributedTaskQueue, start_worker: StartWorker) -> str:
    """A worker without capabilities runs plain tasks; a gpu task waits, queued, until a gpu worker comes and runs
    it. Returns the gpu worker's hostname, with both workers running."""
    cpu = await start_worker("cpu", set())
    waiting = await queue.submit_task("n3test.double", {"x": 4}, required_capability="gpu")
    assert await ran_on(queue, await submit(queue, 2)) == [cpu, cpu]
    assert await queue.get_task_status(waiting) == TaskStatus.QUEUED == "queued"
    status = await queue.get_queue_status()
    assert (status["queue_size"], status["capability_queues"]) == (0, {f"{queue.queue_name}.cap.gpu": 1})

    gpu = await start_worker("gpu", {"gpu"})
    assert await ran_on(queue, [waiting]) == [gpu]
    assert (await queue.get_queue_status())["capability_queues"] == {f"{queue.queue_name}.cap.gpu": 0}
    return gpu


async def only_the_gpu_worker_runs_gpu_tasks(queue: DistributedTaskQueue, cpu: str, gpu: str) -> None:
    assert set(await ran_on(queue, await submit(queue, 6, "gpu"))) == {gpu}
    assert set(await ran_on(queue, await submit(queue, 6))) <= {cpu, gpu}
    batch = await queue.submit_batch(
        [{"task_type": "n3test.double", "payload": {"x": 1}, "required_capability": "gpu"}] * 3
    )
    assert set(await ran_on(queue, batch)) == {gpu}


def test_in_process_workers_route_by_capability() -> None:
    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"n3test-{uuid.uuid4().hex[:8]}")
        names = {"cpu": f"n3test-cpu-{uuid.uuid4().hex[:4]}", "gpu": f"n3test-gpu-{uuid.uuid4().hex[:4]}"}

        async def start_worker(role: str, capabilities: set[str]) -> str:
            await queue.register_worker(names[role], role, capabilities, max_concurrent_tasks=2)
            await queue.start_worker(names[role], serve)
            return str(queue.workers[names[role]].metadata["hostname"])

        try:
            gpu = await a_gpu_task_waits_for_a_gpu_worker(queue, start_worker)
            cpu = queue.workers[names["cpu"]].metadata["hostname"]
            assert queue.workers[names["gpu"]].metadata["queues"] == [queue.queue_name, f"{queue.queue_name}.cap.gpu"]
            await only_the_gpu_worker_runs_gpu_tasks(queue, cpu, gpu)
        finally:
            await queue.stop()

    asyncio.run(main())


def test_an_in_process_worker_with_a_capability_also_runs_tasks_that_require_none() -> None:
    async def main() -> list[str]:
        queue = await create_distributed_queue("memory", queue_name=f"n3test-{uuid.uuid4().hex[:8]}")
        try:
            await queue.register_worker("n3test-gpu-only", "gpu", {"gpu", "fp8"})
            await queue.start_worker("n3test-gpu-only", serve)
            plain = await queue.submit_task("n3test.double", {"x": 1})
            fp8 = await queue.submit_task("n3test.double", {"x": 2}, required_capability="fp8")
            # Namel3ss's own way: the requirement in the task's metadata, published on the broker (and kept
            # among the queue's pending tasks, as its submit_task keeps them)
            by_metadata = DistributedTask(str(uuid.uuid4()), "n3test.double", {"x": 3}, status=TaskStatus.QUEUED)
            by_metadata.metadata["required_capability"] = "gpu"
            queue.pending_tasks[by_metadata.task_id] = by_metadata
            await queue.broker.publish_task(queue.queue_name, by_metadata)
            return await ran_on(queue, [plain, fp8, by_metadata.task_id])
        finally:
            await queue.stop()

    assert {worker.split("@")[0] for worker in asyncio.run(main())} == {"n3test-gpu-only"}


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_arguments(request: pytest.FixtureRequest, redis_url: str) -> dict[str, Any]:
    arguments = {"broker_type": request.param, "queue_name": f"n3test-{uuid.uuid4().hex[:8]}", "redis_url": redis_url}
    if request.param == "rabbitmq":
        arguments["amqp_url"] = request.getfixturevalue("amqp_url")
    return arguments


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def test_celery_workers_route_by_capability(
    broker_arguments: dict[str, Any], redis_url: str, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    """``celery -A namel3ss_celery worker -Q`` with ``worker_queues(queue, capabilities)``, as the README says."""
    broker = broker_arguments.get("amqp_url", redis_url)
    env = {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": redis_url, "NAMEL3SS_CELERY_STEP_MODULES": HANDLERS}
    queue_name = broker_arguments["queue_name"]

    async def main() -> None:
        queue = await create_distributed_queue(**broker_arguments)
        by_role: dict[str, WorkerProcess] = {}

        async def start_worker(role: str, capabilities: set[str]) -> str:
            queues = worker_queues(queue_name, capabilities)
            worker = WorkerProcess("namel3ss_celery", env, tmp_path, pool="prefork", concurrency=2, queues=queues)
            worker_processes.append(worker)
            by_role[role] = worker
            await asyncio.to_thread(worker.wait_ready, queue.broker.app)
            return worker.hostname

        try:
            gpu = await a_gpu_task_waits_for_a_gpu_worker(queue, start_worker)
            cpu = by_role["cpu"].hostname
            found = {node.worker_id: node.capabilities for node in await queue.discover_workers(timeout=2.0)}
            assert found == {cpu: set(), gpu: {"gpu"}}
            await only_the_gpu_worker_runs_gpu_tasks(queue, cpu, gpu)

            # with the plain worker gone, the gpu worker runs plain tasks too
            await asyncio.to_thread(by_role["cpu"].stop)
            assert await ran_on(queue, await submit(queue, 2)) == [gpu, gpu]
        finally:
            for worker in worker_processes:
                await asyncio.to_thread(worker.stop)
            for name in worker_queues(queue_name, {"gpu"}):
                await asyncio.to_thread(delete_queue, queue.broker.app, name)
            await queue.stop()

    asyncio.run(main())


def delete_queue(app: Any, name: str) -> None:
    """Leave no test queue on the broker."""
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(name)
