"""The usage examples of the Namel3ss guides (parallel, distributed, events) run here with only their import
changed (tests/integration/guide_examples.py holds them, each naming its guide and section).

The examples that are broken on Namel3ss itself (a keyword or a method its runtime does not have, a field its
result does not have) are marked ``xfail(strict=True)`` with the reason, which README.md's "Where this differs
from Namel3ss" also gives; where one line corrects it, the corrected form runs too. The distributed examples run
on Redis with a real ``celery worker``; none of the guides' examples uses RabbitMQ.

Not here: the guides' examples that need ``namel3ss.runtime.security`` or ``namel3ss.runtime.observability``
(EXAMPLES_AND_USAGE_GUIDE.md "Machine Learning Workflows" and "Web Service Integration"; API_DOCUMENTATION.md
"Security-Enabled Execution" and "Complete Integration Example"): those modules are not part of the runtime API
this package offers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import namel3ss_celery.runtime as runtime
import namel3ss_celery.runtime.events as runtime_events
from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.errors import SpecError
from namel3ss_celery.runtime import (
    DistributedTaskQueue,
    Event,
    EventDrivenExecutor,
    EventType,
    TaskStatus,
    create_distributed_queue,
    get_event_executor,
)

from . import guide_examples as guides
from .workers import WorkerProcess

pytestmark = pytest.mark.timeout(120)

GUIDES = "tests.integration.guide_examples"
WAIT = 60


@pytest.fixture(autouse=True)
def embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process examples run on the embedded default, whatever this shell points Celery at."""
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "NAMEL3SS_CELERY_PROGRAM"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def guide_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ``celery worker`` of the default app on Redis that loads the examples' module, serving the app's queue
    (the distributed executor's blocks) and the queue named ``default`` (DistributedTaskQueue's)."""
    env = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url, "NAMEL3SS_CELERY_STEP_MODULES": GUIDES}
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path_factory.mktemp("guides"), queues=["celery", "default"])
    try:
        worker.wait_ready(n3.app)
        yield {"redis_url": redis_url, "hostname": worker.hostname}
    finally:
        worker.stop()
        n3.close()


# --- docs/implementation/PARALLEL_DISTRIBUTED_EXECUTION_COMPLETE.md ----------------------------------------------


def test_simple_parallel_execution() -> None:
    result = asyncio.run(guides.simple_parallel_execution())
    assert result.overall_status == "completed" and result.completed_tasks == 3
    assert [r.result for r in result.results] == [{"result": f"processed_{i}"} for i in (1, 2, 3)]
    assert result.metadata["executed_on"] == "local"


@pytest.mark.integration
def test_distributed_execution_as_written_fails_each_step_on_the_worker(
    guide_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's my_task reads step_data['id'] and its steps carry 'task': every step fails, here as on
    Namel3ss (which reports such a block ``completed``; here it is ``failed``)."""
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", GUIDES)
    result = asyncio.run(guides.distributed_execution(guide_worker["redis_url"]))
    assert result.overall_status == "failed" and result.metadata["placement"] == "distributed"
    failed = [r for r in result.results if r.status == "failed"]
    assert failed and all("KeyError" in (r.error or "") and "'id'" in (r.error or "") for r in failed)
    assert {r.metadata["executed_on"] for r in failed} == {"celery"}


@pytest.mark.integration
def test_distributed_execution_with_steps_my_task_can_read_runs_on_the_worker(
    guide_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", GUIDES)
    steps = [{"id": i} for i in range(10)]
    result = asyncio.run(guides.distributed_execution(guide_worker["redis_url"], steps))
    assert result.overall_status == "completed" and result.completed_tasks == 10
    assert result.final_result == {f"step_{i}": {"result": f"processed_{i}"} for i in range(10)}
    assert {r.metadata["worker"] for r in result.results} == {guide_worker["hostname"]}


def test_event_driven_workflows_run_the_triggered_workflow() -> None:
    async def scenario() -> tuple[Event, Any]:
        executor = await get_event_executor()
        completed: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        try:
            await executor.register_event_handler(  # the test's own: how it sees the run end
                [EventType.WORKFLOW_COMPLETED],
                lambda event: loop.call_soon_threadsafe(completed.put_nowait, event),
                filters={"workflow_name": "post_processing"},
            )
            await guides.event_driven_workflows()
            event = await asyncio.wait_for(completed.get(), WAIT)
            return event, await executor.n3.run(event.data["instance_id"]).aget(timeout=WAIT)
        finally:
            await executor.stop()
            executor.n3.close()
            runtime_events._executor = None  # the process's executor ends with this test

    event, run = asyncio.run(scenario())
    assert event.data["status"] == "completed"
    assert run.block_name == "event_workflow_post_processing"
    assert run.final_result == {
        "step_0": {"validated": "123"},
        "step_1": {"stored": "success"},
        "step_2": {"notified": "analysis_engine"},
    }


def test_the_reactive_workflow_example_of_the_events_module_runs() -> None:
    """``namel3ss.runtime.events.create_reactive_workflow_example``: its workflow runs on the trigger it
    publishes, and each step reports what it was given, as Namel3ss's default step executor does."""

    async def scenario() -> tuple[Event, Any]:
        executor = await get_event_executor()
        completed: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        try:
            await executor.register_event_handler(
                [EventType.WORKFLOW_COMPLETED],
                lambda event: loop.call_soon_threadsafe(completed.put_nowait, event),
                filters={"workflow_name": "post_processing_pipeline"},
            )
            assert await runtime_events.create_reactive_workflow_example() is None
            event = await asyncio.wait_for(completed.get(), WAIT)
            return event, await executor.n3.run(event.data["instance_id"]).aget(timeout=WAIT)
        finally:
            await executor.stop()
            executor.n3.close()
            runtime_events._executor = None  # the process's executor ends with this test

    event, run = asyncio.run(scenario())
    assert event.data["status"] == "completed"
    assert run.block_name == "event_workflow_post_processing_pipeline"
    assert [(s["step_type"], s["step_data"]) for s in run.final_result.values()] == [
        ("validate_result", {}),
        ("store_result", {}),
        ("notify_completion", {}),
    ]
    assert all("trigger_event" in s["context_keys"] for s in run.final_result.values())


# --- docs/guides/EXAMPLES_AND_USAGE_GUIDE.md ---------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    raises=AttributeError,
    reason="broken on Namel3ss: result.execution_time is no field of ParallelExecutionResult (total_duration_ms)",
)
def test_quick_start_parallel_as_written() -> None:
    asyncio.run(guides.quick_start_parallel())


def test_quick_start_parallel_with_the_duration_the_result_has() -> None:
    assert asyncio.run(guides.quick_start_parallel(corrected=True)) == [i**2 for i in range(10)]


def test_quick_start_distributed_with_a_worker_in_this_process() -> None:
    results = asyncio.run(guides.quick_start_distributed())
    assert [task.status for task in results] == [TaskStatus.COMPLETED] * 5
    assert [task.result for task in results] == [{"processed": f"item_{i}"} for i in range(5)]
    assert {task.worker_id.split("@")[0] for task in results if task.worker_id} == {"guide-worker"}


@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="broken on Namel3ss: DistributedTaskQueue takes no worker_timeout or max_retries",
)
def test_batch_data_processing() -> None:
    asyncio.run(guides.batch_processing_example())


@pytest.mark.xfail(
    strict=True, raises=TypeError, reason="broken on Namel3ss: EventDrivenExecutor takes no max_concurrent_handlers"
)
def test_stream_processing_with_windows() -> None:
    asyncio.run(guides.stream_processing_example())


# --- docs/API_DOCUMENTATION.md -----------------------------------------------------------------------------------


def test_system_architecture_imports() -> None:
    assert guides.system_architecture_imports() == [
        runtime.ParallelExecutor,
        runtime.DistributedTaskQueue,
        runtime.DistributedParallelExecutor,
        runtime.EventDrivenExecutor,
    ]


def test_execute_parallel_block_docstring() -> None:
    result = asyncio.run(guides.execute_parallel_block_docstring())
    assert result.overall_status == "completed"
    assert result.final_result == {f"step_{i}": f"result_for_step{i + 1}" for i in range(3)}


async def on_a_memory_queue(example: Any, submit_first: bool = False) -> None:
    """Run ``example(queue)`` (or ``example(queue, task_id)``) on a started memory queue, stopped after."""
    queue: DistributedTaskQueue = await create_distributed_queue("memory", queue_name=f"guide-{uuid.uuid4().hex[:8]}")
    try:
        if submit_first:
            await example(queue, await queue.submit_task("data_analysis", {}))
        else:
            await example(queue)
    finally:
        await queue.stop()


@pytest.mark.xfail(strict=True, raises=TypeError, reason="broken on Namel3ss: submit_task's timeout is timeout_seconds")
def test_submit_task_docstring() -> None:
    asyncio.run(on_a_memory_queue(guides.submit_task_docstring))


@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="broken on Namel3ss: its queue has no get_task_status; here it gives a TaskStatus, not {state, progress}",
)
def test_get_task_status_docstring() -> None:
    asyncio.run(on_a_memory_queue(guides.get_task_status_docstring, submit_first=True))


async def on_an_event_executor(example: Any) -> None:
    """Run ``example(executor)`` with an event executor on the embedded default, closed after."""
    executor = EventDrivenExecutor(enable_websocket=False)
    try:
        await example(executor)
    finally:
        executor.n3.close()


@pytest.mark.xfail(
    strict=True, raises=TypeError, reason="broken on Namel3ss: register_event_handler's filters are `filters`"
)
def test_register_event_handler_docstring() -> None:
    asyncio.run(on_an_event_executor(guides.register_event_handler_docstring))


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="broken on Namel3ss: no trigger_event (publish_event)")
def test_trigger_event_docstring() -> None:
    asyncio.run(on_an_event_executor(guides.trigger_event_docstring))


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="broken on Namel3ss: no start_websocket_server")
def test_start_websocket_server_docstring() -> None:
    asyncio.run(on_an_event_executor(guides.start_websocket_server_docstring))


def test_basic_parallel_example() -> None:
    result = asyncio.run(guides.basic_parallel_example())
    assert result.overall_status == "completed" and result.completed_tasks == 5
    assert [r.result for r in result.results] == [f"processed_item{i}" for i in range(1, 6)]


@pytest.mark.integration
def test_distributed_task_processing_on_a_celery_worker(guide_worker: dict[str, str]) -> None:
    results = asyncio.run(guides.distributed_example(guide_worker["redis_url"]))
    assert [task.status for task in results] == [TaskStatus.COMPLETED] * 10
    assert [task.result for task in results] == [{"batch_id": i, "rows": 1000} for i in range(10)]
    assert {task.worker_id for task in results} == {guide_worker["hostname"]}
    assert os.getpid() not in {task.result.get("pid") for task in results}


@pytest.mark.xfail(
    strict=True,
    raises=SpecError,
    reason="broken on Namel3ss: no trigger_event (AttributeError there); here 'task_processed' is no event type",
)
def test_event_driven_processing() -> None:
    asyncio.run(guides.event_driven_example())
