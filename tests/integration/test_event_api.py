"""The Namel3ss event API with only the import line changed: a workflow trigger registered in this process
runs its workflow on a Celery worker when another process publishes the event, and this process's handler
receives the run's one ``workflow_completed``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.runtime import Event, EventDrivenExecutor, EventType, RedisEventBus

from .workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60

PUBLISHER = """
import asyncio, sys
from namel3ss_celery.runtime import EventDrivenExecutor, EventType, RedisEventBus

async def main():
    executor = EventDrivenExecutor(event_bus=RedisEventBus(sys.argv[1]), enable_websocket=False)
    print(await executor.publish_event(EventType.TASK_COMPLETED, "analysis_engine",
                                       {"task_type": sys.argv[2], "task_id": "a-1"}, correlation_id="c-9"))
    executor.n3.close()

asyncio.run(main())
"""


@pytest.fixture
def worker_on_redis(redis_url: str, tmp_path: Path) -> Iterator[tuple[Namel3ssCelery, WorkerProcess]]:
    """A ``celery -A namel3ss_celery`` worker on Redis with the test steps, ready, and a client of its own."""
    import tests.integration.steps  # noqa: F401 - echo, which the workflows name

    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    probe = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path)
    try:
        worker.wait_ready(probe.app)
        yield probe, worker
    finally:
        worker.stop()
        probe.close()


def test_a_trigger_registered_here_runs_on_a_worker_for_an_event_published_elsewhere(
    redis_url: str, worker_on_redis: tuple[Namel3ssCelery, WorkerProcess]
) -> None:
    probe, worker = worker_on_redis
    tag = f"analysis-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[str, Event]:
        executor = EventDrivenExecutor(event_bus=RedisEventBus(redis_url), enable_websocket=False)
        completed: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        await executor.start()
        try:
            await executor.register_event_handler(
                [EventType.WORKFLOW_COMPLETED],
                lambda event: loop.call_soon_threadsafe(completed.put_nowait, event),
                filters={"workflow_name": f"post-{tag}"},
            )
            await executor.register_workflow_trigger(
                f"post-{tag}",
                EventType.TASK_COMPLETED,
                {"steps": [{"type": "echo", "value": "validated"}], "strategy": "all"},
                filters={"task_type": tag},
            )
            published = subprocess.run(
                [sys.executable, "-c", PUBLISHER, redis_url, tag],
                cwd=REPO,
                env={k: v for k, v in os.environ.items() if not k.startswith("CELERY_")} | {"PYTHONPATH": str(REPO)},
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert published.returncode == 0, published.stderr
            event = await asyncio.wait_for(completed.get(), WAIT)
            assert executor.get_stats()["event_driven_executor"]["workflows_triggered"] == 1
            return published.stdout.strip(), event
        finally:
            await executor.stop()
            executor.n3.close()

    event_id, completed = asyncio.run(scenario())
    assert completed.data["trigger_event_id"] == event_id
    assert completed.data["status"] == "completed" and completed.correlation_id == "c-9"
    run = probe.run(completed.data["instance_id"]).get(timeout=WAIT)
    assert run.final_result == {"step_0": "validated"} and run.block_name == f"event_workflow_post-{tag}"
    assert "n3.step.echo" in worker.log()  # it ran on the worker


def test_the_same_calls_on_the_embedded_default() -> None:
    """No broker: the embedded worker runs the workflow; the handler is told as before."""
    import tests.integration.steps  # noqa: F401

    async def scenario() -> tuple[str, Event]:
        executor = EventDrivenExecutor(enable_websocket=False)
        completed: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        await executor.start()
        try:
            await executor.register_event_handler(
                ["workflow_completed"], lambda event: loop.call_soon_threadsafe(completed.put_nowait, event)
            )
            await executor.register_workflow_trigger(
                "post", "task_completed", {"steps": [{"type": "echo", "value": 1}]}, filters={"task_type": "analysis"}
            )
            await executor.publish_event("task_completed", "engine", {"task_type": "other"})
            wanted = await executor.publish_event("task_completed", "engine", {"task_type": "analysis"})
            return wanted, await asyncio.wait_for(completed.get(), WAIT)
        finally:
            await executor.stop()
            executor.n3.close()

    wanted, completed = asyncio.run(scenario())
    assert completed.data["trigger_event_id"] == wanted and completed.data["workflow_name"] == "post"


def test_an_unknown_event_type_is_an_error_not_custom() -> None:
    from namel3ss_celery.errors import SpecError

    async def scenario() -> None:
        executor = EventDrivenExecutor(enable_websocket=False)
        try:
            with pytest.raises(SpecError, match="unknown event type 'made_up'"):
                await executor.publish_event("made_up", "s", {})
        finally:
            executor.n3.close()

    asyncio.run(scenario())


def test_a_workflow_registered_in_two_processes_runs_once_per_event_and_catches_up_after_a_restart(
    redis_url: str, worker_on_redis: tuple[Namel3ssCelery, WorkerProcess]
) -> None:
    """Two executors register one workflow: an event starts one run. Both stop; an event published while
    none runs starts its run when an executor registering the workflow starts again."""
    probe, _worker = worker_on_redis
    tag = f"twice-{uuid.uuid4().hex[:8]}"
    workflow = {"steps": [{"type": "echo", "value": "done"}]}

    async def started() -> EventDrivenExecutor:
        executor = EventDrivenExecutor(event_bus=RedisEventBus(redis_url), enable_websocket=False)
        await executor.register_workflow_trigger(tag, EventType.TASK_COMPLETED, workflow, filters={"task_type": tag})
        await executor.start()
        return executor

    def triggered(*executors: EventDrivenExecutor) -> int:
        return sum(e.get_stats()["event_driven_executor"]["workflows_triggered"] for e in executors)

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.05)

    async def scenario() -> list[str]:
        first, second = await started(), await started()
        try:
            await first.publish_event(EventType.TASK_COMPLETED, "engine", {"task_type": tag})
            await until(lambda: triggered(first, second) == 1, "the first event started no run")
        finally:
            for executor in (first, second):
                await executor.stop()
        assert triggered(first, second) == 1
        runs = list(first.workflow_instances) + list(second.workflow_instances)
        await first.publish_event(EventType.TASK_COMPLETED, "engine", {"task_type": tag})  # nobody follows now
        first.n3.close()
        second.n3.close()
        later = await started()
        try:
            await until(lambda: triggered(later) == 1, "the event published while no executor ran started no run")
            return runs + list(later.workflow_instances)
        finally:
            await later.stop()
            later.n3.close()

    runs = asyncio.run(scenario())
    assert len(runs) == 2
    for run_id in runs:
        assert probe.run(run_id).get(timeout=WAIT).final_result == {"step_0": "done"}
