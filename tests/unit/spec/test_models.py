"""Blocks, steps and the infrastructure specs: defaults, enums, unknown keys, field paths."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from namel3ss_celery.errors import SpecError
from namel3ss_celery.spec import (
    DistributedExecutionSpec,
    EventHandlerSpec,
    EventTriggerSpec,
    ParallelBlockSpec,
    ParallelStrategy,
    StepSpec,
    TaskQueueSpec,
    WorkerPoolSpec,
    load_model,
    load_program,
    step_key,
)


@pytest.mark.parametrize(
    ("value", "member"),
    [
        ("all", ParallelStrategy.ALL),
        ("collect", ParallelStrategy.COLLECT),
        ("race", ParallelStrategy.RACE),
        ("any_success", ParallelStrategy.ANY_SUCCESS),
        (ParallelStrategy.COLLECT, ParallelStrategy.COLLECT),
    ],
)
def test_strategy_accepts_its_string_value(value: Any, member: ParallelStrategy) -> None:
    block = load_model(ParallelBlockSpec, {"name": "b", "steps": [], "strategy": value})
    assert block.strategy is member
    assert block.strategy == str(member)


def test_strategies_compare_equal_to_strings() -> None:
    assert ParallelStrategy.ALL == "all"
    assert str(ParallelStrategy.MAP_REDUCE) == "map_reduce"
    assert f"{ParallelStrategy.COLLECT}" == "collect"


def test_block_defaults_are_the_ir_defaults() -> None:
    block = ParallelBlockSpec(name="b", steps=[])
    assert block.strategy == ParallelStrategy.ALL
    assert block.fail_fast is True
    assert block.max_retries == 3
    assert (block.max_concurrency, block.timeout_seconds, block.reduce_function) == (None, None, None)
    assert block.depends_on == []
    assert block.terminate_losers is False


def test_step_keeps_extra_keys_as_payload_and_kind_defaults_to_tool() -> None:
    step = StepSpec.model_validate({"name": "s", "target": "fetch", "query": "celery", "limit": 3, "opts": {"a": [1]}})
    assert step.kind == "tool"
    assert step.payload() == {
        "name": "s",
        "target": "fetch",
        "kind": "tool",
        "query": "celery",
        "limit": 3,
        "opts": {"a": [1]},
    }


def test_step_kind_can_be_given() -> None:
    assert StepSpec.model_validate({"target": "t", "kind": "llm"}).kind == "llm"


def test_step_payload_keeps_extra_keys_that_are_none() -> None:
    step = StepSpec.model_validate({"target": "t", "cursor": None})
    assert step.payload()["cursor"] is None


@pytest.mark.parametrize(
    ("data", "target"),
    [
        ({"type": "summarize"}, "summarize"),
        ({"target": "summarize"}, "summarize"),
        ({"target": "wins", "type": "loses"}, "wins"),
        ({"type": "mod:func"}, "mod:func"),
    ],
)
def test_type_is_an_alias_of_target(data: dict[str, Any], target: str) -> None:
    assert StepSpec.model_validate(data).target == target


def test_step_key_is_the_name_or_the_index() -> None:
    block = ParallelBlockSpec(name="b", steps=[{"name": "first", "target": "t"}, {"target": "t"}])
    assert [step_key(s, i) for i, s in enumerate(block.steps)] == ["first", "step_1"]


@pytest.mark.parametrize(
    "steps",
    [
        [{"name": "s", "target": "t"}, {"name": "s", "target": "u"}],
        [{"target": "t"}, {"name": "step_0", "target": "u"}],
    ],
)
def test_duplicate_step_names_are_refused(steps: list[dict[str, Any]]) -> None:
    with pytest.raises(SpecError, match="two steps are named") as info:
        load_program({"parallel_blocks": [{"name": "b", "steps": steps}]})
    assert info.value.path == "parallel_blocks[0].steps"


def test_map_reduce_without_reduce_function_is_refused() -> None:
    with pytest.raises(SpecError, match="needs reduce_function") as info:
        load_program({"parallel_blocks": [{"name": "b", "strategy": "map_reduce", "steps": []}]})
    assert info.value.path == "parallel_blocks[0]"


def test_map_reduce_with_reduce_function_loads() -> None:
    block = load_model(
        ParallelBlockSpec, {"name": "b", "strategy": "map_reduce", "reduce_function": "sum", "steps": []}
    )
    assert block.reduce_function == "sum"


@pytest.mark.parametrize(
    ("program", "path"),
    [
        ({"parallel_blocks": [{"name": "b", "steps": [], "bogus": 1}]}, "parallel_blocks[0].bogus"),
        ({"worker_pools": [{"name": "p", "queue_name": "q", "colour": "red"}]}, "worker_pools[0].colour"),
        ({"task_queues": [{"name": "q", "ttl": 1}]}, "task_queues[0].ttl"),
        ({"distributed_configs": [{"worker_pool": "p", "x": 1}]}, "distributed_configs[0].x"),
        ({"event_triggers": [{"name": "t", "event_type": "e", "trigger_target": "w", "y": 1}]}, "event_triggers[0].y"),
        ({"event_handlers": [{"name": "h", "z": 1}]}, "event_handlers[0].z"),
        ({"workflows": [{"name": "w", "steps": [{"name": "n", "target": "t"}], "q": 1}]}, "workflows[0].q"),
        ({"parallel_blockz": []}, "parallel_blockz"),
    ],
)
def test_unknown_keys_are_errors_naming_the_field(program: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError, match="unknown key") as info:
        load_program(program)
    assert info.value.path == path
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("program", "path", "allowed"),
    [
        (
            {"parallel_blocks": [{"name": "b", "steps": [], "strategy": "fastest"}]},
            "parallel_blocks[0].strategy",
            ["all", "any_success", "race", "map_reduce", "collect"],
        ),
        (
            {"task_queues": [{"name": "q", "queue_type": "kafka"}]},
            "task_queues[0].queue_type",
            ["redis_streams", "redis", "rabbitmq", "memory"],
        ),
        (
            {"task_queues": [{"name": "q", "reliability": "maybe"}]},
            "task_queues[0].reliability",
            ["at_most_once", "at_least_once", "exactly_once"],
        ),
        (
            {"task_queues": [{"name": "q", "retry_backoff": "random"}]},
            "task_queues[0].retry_backoff",
            ["fixed", "linear", "exponential"],
        ),
        (
            {"worker_pools": [{"name": "p", "queue_name": "q", "scaling_metric": "gpu"}]},
            "worker_pools[0].scaling_metric",
            ["queue_depth", "cpu", "memory"],
        ),
        (
            {"distributed_configs": [{"worker_pool": "p", "failure_mode": "panic"}]},
            "distributed_configs[0].failure_mode",
            ["retry_remote", "retry_local", "fail_fast"],
        ),
        (
            {"distributed_configs": [{"worker_pool": "p", "distribution_policy": "x"}]},
            "distributed_configs[0].distribution_policy",
            ["round_robin", "load_based", "sticky", "locality_aware", "random"],
        ),
        (
            {"event_triggers": [{"name": "t", "event_type": "e", "trigger_target": "w", "execution_mode": "later"}]},
            "event_triggers[0].execution_mode",
            ["async", "sync", "background"],
        ),
    ],
)
def test_bad_enum_values_list_the_allowed_values(program: dict[str, Any], path: str, allowed: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_program(program)
    assert info.value.path == path
    for value in allowed:
        assert f"'{value}'" in str(info.value)


@pytest.mark.parametrize(
    ("program", "path"),
    [
        ({"parallel_blocks": [{"steps": []}]}, "parallel_blocks[0].name"),
        ({"parallel_blocks": [{"name": "b", "steps": "none"}]}, "parallel_blocks[0].steps"),
        ({"parallel_blocks": [{"name": "", "steps": []}]}, "parallel_blocks[0].name"),
        ({"parallel_blocks": [{"name": "b", "steps": [], "max_concurrency": 0}]}, "parallel_blocks[0].max_concurrency"),
        (
            {"parallel_blocks": [{"name": "b", "steps": [{"target": "t", "timeout_seconds": -1}]}]},
            "parallel_blocks[0].steps[0].timeout_seconds",
        ),
        ({"worker_pools": [{"name": "p"}]}, "worker_pools[0].queue_name"),
        ({"task_queues": [{"name": "q", "max_retries": -1}]}, "task_queues[0].max_retries"),
    ],
)
def test_invalid_values_name_their_field(program: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        load_program(program)
    assert info.value.path == path


def test_every_problem_is_listed() -> None:
    with pytest.raises(SpecError) as info:
        load_program({"parallel_blocks": [{"name": "b", "steps": [], "strategy": "x", "bogus": 1}]})
    paths = [p for p, _ in info.value.problems]
    assert sorted(paths) == ["parallel_blocks[0].bogus", "parallel_blocks[0].strategy"]


def test_fallback_to_local_defaults_to_false() -> None:
    assert DistributedExecutionSpec(worker_pool="gpu").fallback_to_local is False
    assert DistributedExecutionSpec(worker_pool="gpu", fallback_to_local=True).fallback_to_local is True


def test_infra_defaults() -> None:
    pool = WorkerPoolSpec(name="p", queue_name="q")
    queue = TaskQueueSpec(name="q")
    trigger = EventTriggerSpec(name="t", event_type="e", trigger_target="w")
    assert (pool.min_workers, pool.max_workers, pool.scaling_metric) == (1, 10, "queue_depth")
    assert (queue.queue_type, queue.reliability, queue.retry_backoff, queue.max_retries) == (
        "redis_streams",
        "at_least_once",
        "exponential",
        3,
    )
    assert trigger.execution_mode == "async"
    assert EventHandlerSpec(name="h").event_types == []


@pytest.mark.parametrize("mode", ["async", "sync", "background"])
def test_every_execution_mode_of_the_ir_loads(mode: str) -> None:
    """Namel3ss's ``EventTrigger.execution_mode``: "async, sync, background"."""
    trigger = EventTriggerSpec(name="t", event_type="e", trigger_target="w", execution_mode=mode)
    assert trigger.execution_mode == mode


def test_specs_are_frozen() -> None:
    block = ParallelBlockSpec(name="b", steps=[])
    with pytest.raises(pydantic.ValidationError):
        block.name = "other"  # type: ignore[misc]
