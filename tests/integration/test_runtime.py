"""The Namel3ss runtime API, with only the import line changed: locally, and on Redis with a real worker."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Iterator
from typing import Any

import pytest

from namel3ss_celery import UnknownTarget
from namel3ss_celery.errors import SpecError
from namel3ss_celery.runtime import (
    ParallelExecutor,
    ParallelStrategy,
    create_distributed_executor,
    execute_distributed_parallel,
    execute_parallel_steps,
)

from .steps import runtime_task, runtime_value
from .workers import WorkerProcess

WAIT = 60


async def double(step: dict[str, Any], context: dict[str, Any]) -> int:
    await asyncio.sleep(0.01)
    if step.get("fail"):
        raise RuntimeError(f"step {step['x']} failed")
    return int(step["x"]) * 2


@pytest.mark.parametrize(
    ("strategy", "status", "final"),
    [
        ("all", "completed", {"step_0": 2, "step_1": 4, "step_2": 6}),
        ("map_reduce", "completed", 12),
        ("any_success", "completed", None),
        ("race", "completed", None),
    ],
)
def test_execute_parallel_steps_runs_locally(strategy: str, status: str, final: Any) -> None:
    steps = [{"x": 1}, {"x": 2}, {"x": 3}]
    extra = {"reduce_function": "sum"} if strategy == "map_reduce" else {}

    async def main() -> Any:
        if extra:
            return await ParallelExecutor().execute_parallel_block(
                {"name": "b", "steps": steps, "strategy": strategy, **extra}, double
            )
        return await execute_parallel_steps(steps, double, strategy=strategy, max_concurrency=2)

    result = asyncio.run(main())
    assert result.overall_status == status
    assert result.metadata["executed_on"] == "local"
    if final is not None:
        assert result.final_result == final
    else:
        assert result.final_result in (2, 4, 6)


def test_the_namel3ss_defects_are_not_carried_over() -> None:
    async def main() -> tuple[Any, Any]:
        failed_all = await execute_parallel_steps([{"x": 1}, {"x": 2, "fail": True}], double, strategy="all")
        failed_race = await execute_parallel_steps([{"x": 1, "fail": True}], double, strategy=ParallelStrategy.RACE)
        return failed_all, failed_race

    failed_all, failed_race = asyncio.run(main())
    assert failed_all.overall_status == "failed"
    assert failed_race.overall_status == "failed"


def test_in_this_process_a_step_reaches_the_executor_as_given() -> None:
    """Any value, as the Namel3ss runtime hands it over: strings, numbers, objects JSON cannot carry."""
    when = datetime.date(2026, 1, 1)

    async def describe(step: Any, context: dict[str, Any]) -> Any:
        return step["at"].isoformat() if isinstance(step, dict) else f"{type(step).__name__} {step}"

    steps: list[Any] = ["step1", 2, {"name": "when", "at": when}]
    result = asyncio.run(execute_parallel_steps(steps, describe))
    assert result.overall_status == "completed"
    assert result.final_result == {"step_0": "str step1", "step_1": "int 2", "when": "2026-01-01"}


def test_collect_keeps_partial_results_at_a_timeout() -> None:
    async def slow_or_fast(step: dict[str, Any], context: dict[str, Any]) -> str:
        await asyncio.sleep(step["s"])
        return "done"

    steps = [{"name": "fast", "s": 0.01}, {"name": "slow", "s": 5}]
    result = asyncio.run(execute_parallel_steps(steps, slow_or_fast, strategy="collect", timeout_seconds=0.5))
    assert result.overall_status == "timeout"
    assert result.final_result["fast"]["result"] == "done"


def test_stats_count_blocks() -> None:
    executor = ParallelExecutor()
    asyncio.run(executor.execute_parallel_block({"name": "b", "steps": [{"x": 1}]}, double))
    stats = executor.get_execution_stats()
    assert stats["total_blocks"] == 1 and stats["completed_blocks"] == 1 and stats["executed_on"] == {"local": 1}


@pytest.fixture(scope="module")
def default_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A worker of the default app on Redis, with the test steps listed."""
    from namel3ss_celery import Namel3ssCelery, Settings

    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path_factory.mktemp("runtime"))
    try:
        worker.wait_ready(n3.app)
        yield {**env, "hostname": worker.hostname}
    finally:
        worker.stop()
        n3.close()


@pytest.mark.integration
def test_the_documented_distributed_usage_runs_on_a_worker(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")

    async def main() -> Any:
        executor = await create_distributed_executor(
            broker_type="redis", broker_config={"redis_url": default_worker["CELERY_BROKER_URL"]}
        )
        try:
            return await executor.execute_parallel_block(
                parallel_block={
                    "name": "distributed_workflow",
                    "steps": [{"task": i} for i in range(10)],
                    "strategy": "all",
                },
                step_executor=runtime_task,
            ), executor.get_execution_stats()
        finally:
            await executor.cleanup()

    result, stats = asyncio.run(main())
    assert result.overall_status == "completed"
    assert [result.final_result[f"step_{i}"]["task"] for i in range(10)] == list(range(10))
    assert {r.metadata["executed_on"] for r in result.results} == {"celery"}
    assert {r.metadata["worker"] for r in result.results} == {default_worker["hostname"]}
    assert all(result.final_result[f"step_{i}"]["pid"] != os.getpid() for i in range(10))
    assert result.metadata["placement"] == "distributed"
    assert stats["executed_on"] == {"celery": 1}


@pytest.mark.integration
def test_a_closure_is_refused_unless_local_fallback_is_asked(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    broker = {"redis_url": default_worker["CELERY_BROKER_URL"]}

    async def closure(step: dict[str, Any], context: dict[str, Any]) -> int:
        return 1

    block = {"name": "b", "steps": [{"task": 1}]}
    with pytest.raises(UnknownTarget, match="a nested function cannot be sent to workers"):
        asyncio.run(execute_distributed_parallel(block, closure, broker_type="redis", broker_config=broker))
    result = asyncio.run(
        execute_distributed_parallel(block, closure, broker_type="redis", broker_config=broker, fallback_to_local=True)
    )
    assert result.overall_status == "completed"
    assert result.metadata["executed_on"] == "local"
    assert result.metadata["placement"].startswith("local (fallback_to_local")
    with pytest.raises(UnknownTarget):
        asyncio.run(execute_distributed_parallel(block, lambda s, c: 1, broker_type="redis", broker_config=broker))


@pytest.mark.integration
def test_a_failed_distributed_all_block_is_failed(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    block = {"name": "b", "steps": [{"task": 1}, {"task": 2, "fail": True}], "strategy": "all"}
    result = asyncio.run(
        execute_distributed_parallel(
            block, runtime_task, broker_type="redis", broker_config={"redis_url": default_worker["CELERY_BROKER_URL"]}
        )
    )
    assert result.overall_status == "failed"
    assert "task 2 failed" in (result.error_message or "")


@pytest.mark.integration
def test_steps_that_are_not_dicts_reach_a_workers_executor_as_given(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    broker = {"redis_url": default_worker["CELERY_BROKER_URL"]}
    block = {"name": "values", "steps": ["step1", 2, [3, 4]]}
    result = asyncio.run(execute_distributed_parallel(block, runtime_value, broker_type="redis", broker_config=broker))
    assert result.overall_status == "completed"
    said = [result.final_result[f"step_{i}"].rsplit(" on ", 1) for i in range(3)]
    assert [text for text, _pid in said] == ["str step1", "int 2", "list [3, 4]"]
    assert all(int(pid) != os.getpid() for _text, pid in said)  # they ran on the worker
    with pytest.raises(SpecError, match="JSON"):  # on workers a step is JSON data, refused before publishing
        asyncio.run(
            execute_distributed_parallel(
                {"name": "b", "steps": [datetime.date(2026, 1, 1)]},
                runtime_value,
                broker_type="redis",
                broker_config=broker,
            )
        )


@pytest.mark.integration
def test_a_step_with_a_type_of_its_own_reaches_a_workers_executor_as_given(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    broker = {"redis_url": default_worker["CELERY_BROKER_URL"]}
    block = {"name": "typed", "steps": [{"type": "validate_result", "data": {}}, {"target": "store_result"}]}
    result = asyncio.run(execute_distributed_parallel(block, runtime_value, broker_type="redis", broker_config=broker))
    assert result.overall_status == "completed" and result.metadata["placement"] == "distributed"
    said = [result.final_result[f"step_{i}"].rsplit(" on ", 1)[0] for i in range(2)]
    assert said == ["dict {'type': 'validate_result', 'data': {}}", "dict {'target': 'store_result'}"]
    assert result.aggregated_output == result.final_result


@pytest.mark.integration
@pytest.mark.parametrize("reducer", [None, "median"])
def test_map_reduce_on_workers_without_a_known_reducer_is_as_namel3ss(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch, reducer: str | None
) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    broker = {"redis_url": default_worker["CELERY_BROKER_URL"]}
    block: dict[str, Any] = {"name": "mr", "steps": [{"task": 1}, {"task": 2}], "strategy": "map_reduce"}
    if reducer:
        block["reduce_function"] = reducer
    result = asyncio.run(execute_distributed_parallel(block, runtime_task, broker_type="redis", broker_config=broker))
    assert (result.overall_status, result.strategy, result.metadata["placement"]) == (
        "completed",
        "map_reduce",
        "distributed",
    )
    tasks = [{"task": 1, "pid": result.results[0].result["pid"]}, {"task": 2, "pid": result.results[1].result["pid"]}]
    if reducer:  # an unknown reducer: the results as a list
        assert result.final_result == tasks and result.aggregated_output == {"reduced_result": tasks}
    else:  # no reducer: the all result
        assert result.final_result == result.aggregated_output == {"step_0": tasks[0], "step_1": tasks[1]}


@pytest.mark.integration
def test_the_executor_made_the_namel3ss_way_keeps_its_stats_shape(
    default_worker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from namel3ss_celery import BrokerUnavailable
    from namel3ss_celery.runtime import DistributedParallelExecutor

    monkeypatch.setenv("NAMEL3SS_CELERY_STEP_MODULES", "tests.integration.steps")
    config = {"redis_url": default_worker["CELERY_BROKER_URL"]}

    async def main() -> dict[str, Any]:
        executor = DistributedParallelExecutor(broker_type="redis", broker_config=config, distributed_timeout=60)
        await executor.initialize()
        try:
            result = await executor.execute_parallel_block({"name": "b", "steps": ["x", "y"]}, runtime_value)
            assert result.overall_status == "completed" and result.metadata["placement"] == "distributed"
            return executor.get_execution_stats()
        finally:
            await executor.cleanup()

    stats = asyncio.run(main())
    assert stats["distributed"]["total_executions"] == 1 and stats["distributed"]["distributed_executions"] == 1
    assert stats["combined"]["distribution_ratio"] == 1.0 and stats["executed_on"] == {"celery": 1}
    assert stats["combined"]["total_executions"] == 1 and stats["queue_status"] == {"available": True}
    assert {k: stats["local"][k] for k in ("total_executions", "successful_executions", "failed_executions")} == {
        "total_executions": 0,
        "successful_executions": 0,
        "failed_executions": 0,
    }

    async def unreachable(fallback: bool) -> Any:
        dead = {"redis_url": "redis://127.0.0.1:1/0"}
        executor = DistributedParallelExecutor("redis", dead, fallback_to_local=fallback)
        try:
            await executor.initialize()
            return await executor.execute_parallel_block({"name": "b", "steps": ["x"]}, runtime_value)
        finally:
            await executor.cleanup()

    with pytest.raises(BrokerUnavailable):
        asyncio.run(unreachable(False))
    here = asyncio.run(unreachable(True))
    assert here.overall_status == "completed" and here.metadata["placement"].startswith("local")
