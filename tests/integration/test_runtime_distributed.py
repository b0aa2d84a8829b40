"""The Namel3ss distributed task queue on Celery, end to end with real workers: submit, worker, status, result,
failure, timeouts; on the memory broker (a worker in this process), on Redis and on RabbitMQ (``celery worker``
subprocesses of the default app, serving the queue)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery.errors import TaskWaitTimeout, UnknownTask
from namel3ss_celery.runtime import (
    DistributedParallelExecutor,
    DistributedTask,
    DistributedTaskQueue,
    TaskStatus,
    WorkerStatus,
    create_distributed_queue,
)

from .queue_handlers import serve
from .workers import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HANDLERS = "tests.integration.queue_handlers"
WAIT = 30


async def until_status(queue: DistributedTaskQueue, task_id: str, status: TaskStatus) -> None:
    """Ask the result backend until the task is in ``status`` (bounded: WAIT seconds)."""
    async with asyncio.timeout(WAIT):
        while await queue.get_task_status(task_id) != status:
            await asyncio.sleep(0.02)


async def exercise(queue: DistributedTaskQueue, worker_name: str, in_process: bool) -> None:
    """What every broker must do, with a worker serving ``queue``."""
    # submit, a worker runs it, the result comes back from the backend
    first = await queue.submit_task("n3test.double", {"x": 21})
    done = await queue.get_task_result(first, timeout=WAIT)
    assert done.status == TaskStatus.COMPLETED == "completed"
    assert done.result["double"] == 42
    assert (done.result["pid"] == os.getpid()) is in_process
    assert done.worker_id is not None and done.worker_id.startswith(worker_name)
    assert await queue.get_task_status(first) == TaskStatus.COMPLETED

    # a batch, a sync handler named module:function among them
    ids = await queue.submit_batch(
        [{"task_type": "n3test.double", "payload": {"x": 1}}, {"task_type": f"{HANDLERS}:triple", "payload": {"x": 2}}]
    )
    batch = await queue.get_batch_results(ids, timeout=WAIT)
    assert [batch[i].result for i in ids] == [{"double": 2, "pid": batch[ids[0]].result["pid"]}, 6]

    # failure: retried max_retries times, then FAILED with the handler's error
    failing = await queue.submit_task("n3test.double", {"x": 5, "fail": True}, max_retries=1)
    failed = await queue.get_task_result(failing, timeout=WAIT)
    assert failed.status == TaskStatus.FAILED
    assert failed.error == "ValueError: cannot double 5" and failed.retry_count == 1

    # a handler past its timeout_seconds fails the task, with no retry
    late = await queue.submit_task("n3test.double", {"x": 1, "seconds": 5}, timeout_seconds=0.2)
    timed_out = await queue.get_task_result(late, timeout=WAIT)
    assert timed_out.status == TaskStatus.FAILED
    assert timed_out.error is not None and "ran past its timeout_seconds (0.2s)" in timed_out.error

    # waiting gives up at its own timeout, naming the status; the task goes on and ends
    slow = await queue.submit_task("n3test.double", {"x": 2, "seconds": 1.0})
    await until_status(queue, slow, TaskStatus.RUNNING)
    with pytest.raises(TaskWaitTimeout, match=rf"task {slow} \(n3test.double\) still running after waiting 0.1s"):
        await queue.get_task_result(slow, timeout=0.1)
    assert (await queue.get_task_result(slow, timeout=WAIT)).result["double"] == 4

    # a task type no worker knows fails, saying so
    unknown = await queue.get_task_result(await queue.submit_task("n3test.nothing", {}, max_retries=0), WAIT)
    assert unknown.status == TaskStatus.FAILED
    assert unknown.error is not None and "no handler for task type 'n3test.nothing'" in unknown.error
    assert unknown.error.startswith("LookupError" if in_process else "UnknownTaskType")  # the worker's own words

    with pytest.raises(UnknownTask):
        await queue.get_task_result(str(uuid.uuid4()), timeout=1)
    status = await queue.get_queue_status()
    assert status["queue_size"] == 0 and status["pending_tasks"] == 0
    assert status["stats"]["tasks_submitted"] == 7 and status["stats"]["tasks_failed"] == 3


def test_the_memory_queue_runs_on_a_worker_in_this_process() -> None:
    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"n3test-{uuid.uuid4().hex[:8]}")
        try:
            await queue.register_worker("n3test-w1", "doubler", {"double"}, max_concurrent_tasks=2)
            await queue.start_worker("n3test-w1", serve)
            assert queue.workers["n3test-w1"].status == WorkerStatus.IDLE
            await exercise(queue, "n3test-w1", in_process=True)
        finally:
            await queue.stop()
        assert queue.workers["n3test-w1"].status == WorkerStatus.OFFLINE

    asyncio.run(main())


def test_a_sync_handler_of_an_in_process_worker_is_timed_out_too() -> None:
    """``start_worker`` wraps the handler; a sync one runs in a thread, so its task's timeout still holds."""
    release = threading.Event()

    def stuck(task: DistributedTask) -> None:
        release.wait(5)

    async def main() -> DistributedTask:
        queue = await create_distributed_queue("memory", queue_name=f"unit-{uuid.uuid4().hex[:8]}")
        try:
            await queue.register_worker("unit-w", "x", set())
            await queue.start_worker("unit-w", stuck)
            task_id = await queue.submit_task("x", {}, timeout_seconds=0.1, max_retries=0)
            return await queue.get_task_result(task_id, timeout=10)
        finally:
            release.set()
            await queue.stop()

    found = asyncio.run(main())
    assert found.status == TaskStatus.FAILED
    assert found.error is not None and "ran past its timeout_seconds (0.1s)" in found.error


@pytest.fixture(params=["redis", "rabbitmq"])
def served_queue(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> Iterator[tuple[dict[str, Any], WorkerProcess]]:
    """A queue name and broker arguments, with ``celery -A namel3ss_celery worker -Q <queue>`` serving it."""
    kind = request.param
    broker = request.getfixturevalue("amqp_url") if kind == "rabbitmq" else redis_url
    queue_name = f"n3test-{uuid.uuid4().hex[:8]}"
    arguments = {"broker_type": kind, "queue_name": queue_name, "redis_url": redis_url}
    if kind == "rabbitmq":
        arguments["amqp_url"] = broker
    env = {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": redis_url, "NAMEL3SS_CELERY_STEP_MODULES": HANDLERS}
    worker = WorkerProcess("namel3ss_celery", env, tmp_path, pool="prefork", concurrency=2, queues=[queue_name])
    yield arguments, worker
    worker.stop()


def test_a_redis_or_rabbitmq_queue_runs_on_a_celery_worker(served_queue: tuple[dict[str, Any], WorkerProcess]) -> None:
    arguments, worker = served_queue

    async def main() -> None:
        queue = await create_distributed_queue(**arguments)
        try:
            await asyncio.to_thread(worker.wait_ready, queue.broker.app)
            (node,) = await queue.discover_workers()  # the celery worker, as a WorkerNode
            assert (node.worker_id, node.max_concurrent_tasks, node.status) == (worker.hostname, 2, "idle")
            assert queue.workers == {worker.hostname: node}
            await exercise(queue, worker.name, in_process=False)
        finally:
            await asyncio.to_thread(worker.stop)
            await asyncio.to_thread(delete_queue, queue.broker.app, queue.queue_name)
            await queue.stop()

    asyncio.run(main())


def test_the_executor_starts_a_worker_of_its_own() -> None:
    """Namel3ss's ``register_worker`` and ``start_worker``: a Celery worker in this process runs the blocks."""

    async def main() -> Any:
        executor = DistributedParallelExecutor("memory")
        await executor.initialize()
        try:
            await executor.register_worker("n3test-steps", max_concurrent_tasks=2)
            await executor.start_worker("n3test-steps", describe)
            assert executor.workers["n3test-steps"].metadata["hostname"].startswith("n3test-steps@")
            result = await executor.execute_parallel_block({"name": "b", "steps": ["a", 1]}, describe)
            return result, executor.get_execution_stats()
        finally:
            await executor.cleanup()

    result, stats = asyncio.run(main())
    assert stats["distributed"]["total_executions"] == 1 and stats["distributed"]["distributed_executions"] == 1
    assert result.overall_status == "completed" and result.metadata["placement"] == "distributed"
    assert result.final_result == {"step_0": "str a", "step_1": "int 1"}
    assert {r.metadata["executed_on"] for r in result.results} == {"celery"}


def delete_queue(app: Any, name: str) -> None:
    """Leave no test queue on the broker."""
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(name)


async def describe(step: Any, context: dict[str, Any]) -> str:
    return f"{type(step).__name__} {step}"
