"""The Namel3ss parallel API in this process, as Namel3ss code uses it: every step reaches the step executor as
given, map_reduce without a (known) reducer, spec objects with all their fields, the result's shape, the
constructor, and the distributed executor's shared instance and stats."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import namel3ss_celery.runtime.coordinator as coordinator
from namel3ss_celery import step
from namel3ss_celery.errors import CompileError, ConfigurationError, SpecError
from namel3ss_celery.runtime import (
    DistributedParallelExecutor,
    ParallelExecutor,
    execute_distributed_parallel,
    execute_parallel_steps,
    get_distributed_executor,
)
from namel3ss_celery.spec import ParallelBlockSpec


@step("n3unit.runtime.shout")
def shout(step: dict[str, Any], context: dict[str, Any]) -> str:
    return str(step["word"]).upper()


async def echo(step: Any, context: dict[str, Any]) -> Any:
    return step


async def echo_context(step: Any, context: dict[str, Any]) -> Any:
    return dict(context)


@dataclasses.dataclass
class NamedStep:
    """A step object of the caller's with a ``name`` (Namel3ss files its result under it)."""

    name: str
    word: str


@dataclasses.dataclass
class Namel3ssBlock:
    """The Namel3ss IR's ``ParallelBlockSpec`` dataclass: its fields, order and defaults."""

    name: str
    steps: list[Any]
    strategy: str = "all"
    max_concurrency: int | None = None
    timeout_seconds: float | None = None
    fail_fast: bool = True
    retry_failed: bool = False
    max_retries: int = 3
    reduce_function: str | None = None
    output_key: str | None = None
    depends_on: list[str] = dataclasses.field(default_factory=list)
    required_permission_level: str | None = None
    allowed_capabilities: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- steps reach the executor as given -----------------------------------------------------------


def test_a_dict_step_with_a_type_or_target_goes_to_the_step_executor_as_given() -> None:
    steps = [{"type": "validate_result", "data": {}}, {"target": "store_result"}, {"name": "n", "type": "x"}]
    result = asyncio.run(execute_parallel_steps(steps, echo))
    assert result.overall_status == "completed"
    assert result.final_result == {"step_0": steps[0], "step_1": steps[1], "n": steps[2]}
    block = Namel3ssBlock("b", [{"type": "n3unit.runtime.shout", "word": "hi"}])
    in_object = asyncio.run(ParallelExecutor().execute_parallel_block(block, echo))
    assert in_object.final_result == {"step_0": {"type": "n3unit.runtime.shout", "word": "hi"}}


def test_without_a_step_executor_each_step_runs_the_registered_step_it_names() -> None:
    block = {"name": "b", "steps": [{"type": "n3unit.runtime.shout", "word": "hi"}]}
    result = asyncio.run(ParallelExecutor().execute_parallel_block(block, None))
    assert result.final_result == {"step_0": "HI"}
    with pytest.raises(CompileError, match="step has no target"):
        asyncio.run(ParallelExecutor().execute_parallel_block({"name": "b", "steps": [{"word": "hi"}]}, None))


def test_a_spec_of_this_package_runs_its_targets_and_gives_the_executor_the_rest() -> None:
    spec = ParallelBlockSpec.model_validate(
        {"name": "b", "steps": [{"target": "n3unit.runtime.shout", "word": "hi"}, {"name": "other", "word": "x"}]}
    )
    result = asyncio.run(ParallelExecutor().execute_parallel_block(spec, echo))
    assert result.final_result == {"step_0": "HI", "other": {"name": "other", "kind": "tool", "word": "x"}}


def test_an_object_step_with_a_name_is_filed_under_it() -> None:
    async def word(step: Any, context: dict[str, Any]) -> Any:
        return step.word if isinstance(step, NamedStep) else step

    result = asyncio.run(execute_parallel_steps([NamedStep("first", "a"), "plain"], word))
    assert result.final_result == {"first": "a", "step_1": "plain"}


def test_the_step_context_is_the_one_given() -> None:
    given = asyncio.run(execute_parallel_steps([1], echo_context, context={"user": "u1"}))
    assert given.final_result == {"step_0": {"user": "u1"}}
    none = asyncio.run(execute_parallel_steps([1], echo_context))
    assert none.final_result == {"step_0": {}}
    with_outputs = asyncio.run(execute_parallel_steps([1], echo_context, context={"outputs": {"a": 1}}))
    assert with_outputs.final_result == {"step_0": {"outputs": {"a": 1}}}


def test_a_strategy_in_capitals_is_taken_as_namel3ss_takes_it() -> None:
    result = asyncio.run(execute_parallel_steps([1, 2], echo, strategy="MAP_REDUCE"))
    assert (result.strategy, result.final_result) == ("map_reduce", {"step_0": 1, "step_1": 2})


# --- map_reduce without a (known) reducer --------------------------------------------------------------


def test_map_reduce_without_a_reducer_gives_the_all_result() -> None:
    result = asyncio.run(execute_parallel_steps([1, 2, 3], echo, strategy="map_reduce"))
    assert (result.overall_status, result.strategy) == ("completed", "map_reduce")
    assert result.final_result == result.aggregated_output == {"step_0": 1, "step_1": 2, "step_2": 3}


def test_map_reduce_with_an_unknown_reducer_gives_the_results_unreduced() -> None:
    block = {"name": "b", "steps": [1, None, 3], "strategy": "map_reduce", "reduce_function": "median"}
    result = asyncio.run(ParallelExecutor().execute_parallel_block(block, echo))
    assert (result.overall_status, result.strategy) == ("completed", "map_reduce")
    assert result.final_result == [1, 3]  # the successful results that are not None, as Namel3ss gives them
    assert result.aggregated_output == {"reduced_result": [1, 3]}


def test_map_reduce_with_a_known_reducer_still_reduces() -> None:
    block = {"name": "b", "steps": [1, 2, 3], "strategy": "map_reduce", "reduce_function": "sum"}
    result = asyncio.run(ParallelExecutor().execute_parallel_block(block, echo))
    assert (result.final_result, result.aggregated_output) == (6, {"reduced_result": 6})


@pytest.mark.parametrize("reducer", [None, "median"])
def test_a_programs_map_reduce_block_still_needs_a_known_reducer(reducer: str | None) -> None:
    from namel3ss_celery import Namel3ssCelery, Settings

    n3 = Namel3ssCelery(settings=Settings.from_mapping({}))
    block = {"name": "b", "strategy": "map_reduce", "steps": [{"target": "n3unit.runtime.shout", "word": "a"}]}
    try:
        with pytest.raises((SpecError, CompileError), match="reduce"):
            n3.plan({**block, "reduce_function": reducer} if reducer else block)
    finally:
        n3.close()


# --- spec objects keep every field ------------------------------------------------------------------


def test_a_spec_object_keeps_retry_failed_and_max_retries() -> None:
    tries: dict[str, int] = {}

    async def flaky(step: Any, context: dict[str, Any]) -> Any:
        tries[step] = tries.get(step, 0) + 1
        if tries[step] == 1:
            raise RuntimeError("the first try fails")
        return step

    block = Namel3ssBlock("b", ["x"], retry_failed=True, max_retries=1, depends_on=["earlier"])
    result = asyncio.run(ParallelExecutor().execute_parallel_block(block, flaky))
    assert result.overall_status == "completed" and result.final_result == {"step_0": "x"}
    assert tries == {"x": 2} and result.results[0].metadata["attempts"] == 2
    without = asyncio.run(ParallelExecutor().execute_parallel_block(Namel3ssBlock("b", ["y"]), flaky))
    assert without.overall_status == "failed" and tries["y"] == 1


def test_a_spec_object_keeps_fields_this_release_refuses() -> None:
    """``output_key`` is kept, and refused as it is in a dict block, rather than dropped without a word."""
    from namel3ss_celery.errors import NotSupportedYet

    with pytest.raises(NotSupportedYet, match="output_key"):
        asyncio.run(ParallelExecutor().execute_parallel_block(Namel3ssBlock("b", [1], output_key="out"), echo))


# --- the result's shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "aggregated"),
    [
        ("all", {"step_0": 1, "step_1": 2}),
        ("collect", "final_result"),
        ("race", None),
        ("any_success", None),
    ],
)
def test_aggregated_output_has_the_namel3ss_shape(strategy: str, aggregated: Any) -> None:
    result = asyncio.run(execute_parallel_steps([1, 2], echo, strategy=strategy))
    assert result.aggregated_output == (result.final_result if aggregated == "final_result" else aggregated)


def test_the_parallel_executor_takes_the_namel3ss_arguments_by_position() -> None:
    executor = ParallelExecutor(4, 30.0, False, False, 2, None)
    assert (executor.default_max_concurrency, executor.default_timeout, executor.thread_pool_size) == (4, 30.0, 2)
    assert (executor.enable_tracing, executor.enable_security, executor.security_manager) == (False, False, None)
    with pytest.raises(TypeError):
        ParallelExecutor(worker_timeout=3)  # type: ignore[call-arg]


# --- the distributed executor: the shared instance, the stats ------------------------------------------


@pytest.fixture
def no_broker_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No broker in the environment (the embedded default), and a fresh process executor, cleaned up after."""
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "NAMEL3SS_CELERY_PROGRAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(coordinator, "_distributed", None)
    yield
    if coordinator._distributed is not None:
        asyncio.run(coordinator._distributed.cleanup())


@pytest.mark.usefixtures("no_broker_configured")
def test_execute_distributed_parallel_uses_the_process_executor() -> None:
    async def closure(step: Any, context: dict[str, Any]) -> Any:
        return step

    async def main() -> tuple[Any, Any, dict[str, Any]]:
        result = await execute_distributed_parallel({"name": "b", "steps": [1, 2]}, closure, force_local=True)
        shared = await get_distributed_executor()
        return result, shared, shared.get_execution_stats()

    result, shared, stats = asyncio.run(main())
    assert result.overall_status == "completed" and result.metadata["placement"] == "local (force_local)"
    assert shared.broker_type == "memory"
    assert stats["distributed"]["local_executions"] == 1


def test_execute_distributed_parallel_still_makes_an_executor_of_its_own_when_asked() -> None:
    with pytest.raises(ConfigurationError):  # broker_type redis with no URL, as before
        asyncio.run(execute_distributed_parallel({"name": "b", "steps": [1]}, echo, broker_type="redis"))


@pytest.mark.usefixtures("no_broker_configured")
def test_the_distributed_executors_stats_have_the_namel3ss_keys() -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        executor = DistributedParallelExecutor("memory")
        try:
            before = executor.get_execution_stats()
            await executor.initialize()
            await executor.execute_parallel_block({"name": "b", "steps": [1, 2]}, echo, force_local=True)
            return before, executor.get_execution_stats()
        finally:
            await executor.cleanup()

    before, stats = asyncio.run(main())
    assert "queue_status" not in before  # as Namel3ss: only once the queue is up
    assert stats["queue_status"] == {"available": True}
    local_keys = ("total_executions", "successful_executions", "failed_executions", "total_tasks")
    assert [stats["local"][key] for key in local_keys] == [1, 1, 0, 2]
    assert stats["local"]["average_duration_ms"] > 0
    # Namel3ss adds the local executor's count to its own, which counts every block: a local block twice
    assert stats["combined"] == {"total_executions": 2, "distribution_ratio": 0.0}
    assert stats["distributed"]["total_executions"] == 1 and stats["distributed"]["local_executions"] == 1


# --- waiting for a queue's task -------------------------------------------------------------------------


def test_a_task_wait_timeout_is_an_asyncio_timeout_error() -> None:
    """Namel3ss code catches ``asyncio.TimeoutError`` around ``get_task_result`` (on Python 3.10 not the
    built-in ``TimeoutError``)."""
    import uuid

    from namel3ss_celery.errors import TaskWaitTimeout
    from namel3ss_celery.runtime import create_distributed_queue

    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"unit-{uuid.uuid4().hex[:8]}")
        try:
            task_id = await queue.submit_task("nobody", {})
            with pytest.raises(asyncio.TimeoutError) as raised:
                await queue.get_task_result(task_id, timeout=0.05)
            assert isinstance(raised.value, TaskWaitTimeout)
        finally:
            await queue.stop()

    asyncio.run(main())


def test_a_task_wait_timeout_is_one_where_asyncio_has_a_timeout_error_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on Python 3.10: the queue's module, loaded where ``asyncio.TimeoutError`` is not the built-in one."""
    import importlib.util

    import namel3ss_celery.runtime.distributed as distributed

    own = type("TimeoutError", (Exception,), {})
    monkeypatch.setattr(asyncio, "TimeoutError", own)
    name = "namel3ss_celery.runtime._distributed_on_310"
    spec = importlib.util.spec_from_file_location(name, distributed.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    assert issubclass(module.TaskWaitTimeout, own)
