"""The distributed queue's pure parts: brokers made by type, the handler a worker picks, timeouts, refusals."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from namel3ss_celery.errors import (
    BrokerNotConnected,
    ConfigurationError,
    StepTimeout,
    TaskHandlerFailed,
    TaskWaitTimeout,
    UnknownBrokerType,
    UnknownTask,
    UnknownTaskType,
    UnknownWorker,
)
from namel3ss_celery.runtime import (
    BrokerType,
    DistributedTask,
    DistributedTaskQueue,
    MemoryMessageBroker,
    ParallelExecutor,
    RabbitMQMessageBroker,
    RedisMessageBroker,
    TaskStatus,
    create_distributed_queue,
    create_message_broker,
    execute_parallel_steps,
    get_current_parallel_context,
    task_handler,
)
from namel3ss_celery.runtime.queue_task import attempt, find_handler, run_handler


def test_brokers_by_type_with_the_namel3ss_defaults() -> None:
    redis = create_message_broker("REDIS")
    assert isinstance(redis, RedisMessageBroker) and redis.redis_url == "redis://localhost:6379"
    assert redis.settings().result_backend == "redis://localhost:6379"
    rabbit = create_message_broker(BrokerType.RABBITMQ, redis_url="redis://h:6379/2")
    assert isinstance(rabbit, RabbitMQMessageBroker) and rabbit.amqp_url == "amqp://localhost"
    assert rabbit.settings().result_backend == "redis://h:6379/2"
    assert isinstance(create_message_broker("memory"), MemoryMessageBroker)


def test_an_unknown_broker_type_is_refused_by_name() -> None:
    with pytest.raises(UnknownBrokerType, match="unknown broker type 'kafka'; use redis, rabbitmq or memory"):
        create_message_broker("kafka")
    with pytest.raises(ValueError):  # as Namel3ss code catches it
        create_message_broker("kafka")


def test_rabbitmq_without_a_result_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    with pytest.raises(ConfigurationError, match="needs a result backend"):
        RabbitMQMessageBroker("amqp://localhost")


def test_a_broker_used_before_connect_says_so() -> None:
    broker = MemoryMessageBroker()
    with pytest.raises(BrokerNotConnected, match="memory broker is not connected"):
        asyncio.run(broker.publish_task("q", DistributedTask("t", "x", {})))


def test_start_worker_needs_a_registered_worker() -> None:
    queue = DistributedTaskQueue(MemoryMessageBroker(), "q")
    with pytest.raises(UnknownWorker, match=r"worker 'w9' is not registered"):
        asyncio.run(queue.start_worker("w9", lambda task: None))


def local_handler(task: DistributedTask) -> str:
    return "local"


@task_handler("unit.registered")
def registered(task: DistributedTask) -> str:
    return "registered"


def module_level(task: DistributedTask) -> str:
    return "module"


def test_the_worker_picks_its_own_then_the_registered_then_a_listed_module_function() -> None:
    task = DistributedTask("t", "unit.registered", {})
    assert find_handler(task, "q", local_handler, ()) is local_handler
    assert find_handler(task, "q", None, ()) is registered
    by_name = DistributedTask("t", f"{__name__}:module_level", {})
    assert find_handler(by_name, "q", None, (__name__,)) is module_level
    with pytest.raises(UnknownTaskType, match=r"no handler for task type '.*module_level' on queue 'q'"):
        find_handler(by_name, "q", None, ())  # its module is not listed


def test_a_handler_type_is_registered_once() -> None:
    with pytest.raises(ConfigurationError, match="already has a handler"):
        task_handler("unit.registered")(local_handler)


def test_a_handler_past_its_timeout_fails_the_task() -> None:
    release = threading.Event()

    def stuck(task: DistributedTask) -> None:
        release.wait(5)

    async def slow(task: DistributedTask) -> None:
        await asyncio.sleep(5)

    task = DistributedTask("t1", "slow", {}, timeout_seconds=0.05)
    try:
        for handler in (stuck, slow):
            with pytest.raises(StepTimeout, match=r"task t1 \(slow\) ran past its timeout_seconds \(0.05s\)"):
                run_handler(handler, task)
    finally:
        release.set()
    assert run_handler(lambda t: t.payload, DistributedTask("t2", "x", {"a": 1})) == {"a": 1}


def test_a_step_executor_sees_its_parallel_context() -> None:
    async def async_step(step: Any, context: dict[str, Any]) -> Any:
        found = get_current_parallel_context()
        return found.block_name if found else None

    def sync_step(step: Any, context: dict[str, Any]) -> Any:
        found = get_current_parallel_context()
        return (found.block_name, str(found.strategy), found.max_concurrency) if found else None

    assert get_current_parallel_context() is None
    first = asyncio.run(execute_parallel_steps([1], async_step))
    assert first.final_result == {"step_0": "parallel_steps"}
    second = asyncio.run(execute_parallel_steps(["a"], sync_step, strategy="collect", max_concurrency=3))
    assert second.final_result["step_0"]["result"] == ["parallel_steps", "collect", 3]


def test_a_memory_queue_counts_what_waits_and_reads_published_results() -> None:
    """No worker: submitted tasks wait in the memory transport; a result published by hand is read back."""

    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"unit-{uuid.uuid4().hex[:8]}")
        try:
            waiting = [await queue.submit_task("resize", {"n": n}) for n in range(2)]
            status = await queue.get_queue_status()
            assert (status["queue_size"], status["pending_tasks"], status["total_workers"]) == (2, 2, 0)
            assert await queue.get_task_status(waiting[0]) == TaskStatus.QUEUED
            with pytest.raises(TaskWaitTimeout, match=r"\(resize\) still queued after waiting 0.05s"):
                await queue.get_task_result(waiting[0], timeout=0.05)
            done = DistributedTask(waiting[1], "resize", {}, status=TaskStatus.COMPLETED, result={"ok": 1})
            await queue.broker.publish_result(queue.queue_name, done)
            found = await queue.get_task_result(waiting[1], timeout=5)
            assert (found.status, found.result) == (TaskStatus.COMPLETED, {"ok": 1})
            failed = DistributedTask(waiting[0], "resize", {}, status=TaskStatus.FAILED, error="no file")
            await queue.broker.publish_result(queue.queue_name, failed)
            assert (await queue.get_task_result(waiting[0], timeout=5)).error == "RuntimeError: no file"
            with pytest.raises(UnknownTask, match="unknown task 'nope'"):
                await queue.get_task_status("nope")
        finally:
            await queue.stop()

    asyncio.run(main())


def test_the_parallel_executor_takes_the_namel3ss_constructor_and_cleans_up() -> None:
    executor = ParallelExecutor(
        default_max_concurrency=4,
        default_timeout=30.0,
        enable_tracing=True,
        enable_security=True,
        thread_pool_size=4,
        security_manager=None,
    )

    async def main() -> Any:
        result = await executor.execute_parallel_block({"name": "b", "steps": [1, 2]}, lambda step, context: step)
        await executor.cleanup()
        return result

    assert asyncio.run(main()).final_result == {"step_0": 1, "step_1": 2}
    stats = executor.get_execution_stats()  # Namel3ss code reads these keys
    namel3ss_keys = ("total_executions", "successful_executions", "failed_executions", "total_tasks")
    assert [stats[key] for key in namel3ss_keys] == [1, 1, 0, 2]
    assert stats["average_duration_ms"] > 0


class RecordsStates:
    """Stands in for the running Celery task: what ``update_state`` was told."""

    def __init__(self) -> None:
        self.states: list[tuple[str, int]] = []

    def update_state(self, state: str, meta: dict[str, Any]) -> None:
        self.states.append((state, meta["retries"]))


def test_a_failing_handler_is_tried_again_then_fails_with_its_last_error() -> None:
    errors = iter(["first", "second", "third"])

    def flaky(task: DistributedTask) -> None:
        raise ValueError(next(errors))

    celery_task = RecordsStates()
    with pytest.raises(TaskHandlerFailed) as failed:
        attempt(celery_task, flaky, DistributedTask("t", "x", {}, max_retries=2))
    assert (str(failed.value), failed.value.retries) == ("ValueError: third", 2)
    assert celery_task.states == [("RETRYING", 1), ("RETRYING", 2)]

    outcomes = iter([ValueError("once"), "fine"])

    def second_time_lucky(task: DistributedTask) -> str:
        found = next(outcomes)
        if isinstance(found, Exception):
            raise found
        return found

    task = DistributedTask("t", "x", {})
    assert attempt(RecordsStates(), second_time_lucky, task) == "fine" and task.retry_count == 1
