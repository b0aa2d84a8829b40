"""check_plan: everything a worker would refuse, refused before anything is published."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.compiler.checks import check_plan, check_visibility
from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.errors import CompileError, NotSupportedYet, UnknownTarget
from namel3ss_celery.plan.model import Plan
from namel3ss_celery.registry import Registry, import_step_modules
from namel3ss_celery.spec import ParallelBlockSpec, load_program

PATH = "block[b]"


def fetch(step: dict[str, Any], context: dict[str, Any]) -> str:
    return "ok"


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.add_step("fetch", fetch)
    registry.add_step("summarize", fetch)
    return registry


def plan_of(steps: list[dict[str, Any]] | None = None, **fields: Any) -> Plan:
    return make_plan(ParallelBlockSpec(name="b", steps=steps or [{"target": "fetch"}], **fields))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"strategy": "collect"},
        {"strategy": "map_reduce", "reduce_function": "sum"},
        {"fail_fast": False},
        {"max_retries": 0},
        {"metadata": {"owner": "team"}},
    ],
)
def test_a_supported_block_passes(registry: Registry, fields: dict[str, Any]) -> None:
    check_plan(plan_of([{"target": "fetch"}, {"type": "summarize"}], **fields), registry, ())


def test_an_unknown_target_is_refused_with_its_path(registry: Registry) -> None:
    with pytest.raises(UnknownTarget, match="unknown target 'nope'; registered: fetch, summarize") as info:
        check_plan(plan_of([{"target": "fetch"}, {"target": "nope"}]), registry, ())
    assert info.value.path == f"{PATH}.steps[1]"
    assert str(info.value).startswith(f"{PATH}.steps[1]: ")


def test_a_step_without_a_target_is_refused(registry: Registry) -> None:
    with pytest.raises(CompileError, match="step has no target") as info:
        check_plan(plan_of([{"name": "lonely", "query": "q"}]), registry, ())
    assert info.value.path == f"{PATH}.steps[0]"


def test_a_module_function_outside_the_step_modules_is_refused(registry: Registry) -> None:
    import_step_modules(["examples.steps"], registry)
    with pytest.raises(UnknownTarget, match="NAMEL3SS_CELERY_STEP_MODULES") as info:
        check_plan(plan_of([{"target": "examples.steps:shout"}]), registry, ("other.module",))
    assert "module 'examples.steps' is not listed" in str(info.value)
    assert "listed: other.module" in str(info.value)
    assert info.value.path == f"{PATH}.steps[0]"


def test_a_module_function_of_a_listed_module_passes(registry: Registry) -> None:
    import_step_modules(["examples.steps"], registry)
    check_plan(plan_of([{"target": "examples.steps:shout"}]), registry, ("examples.steps",))


def test_a_missing_function_of_a_listed_module_is_unknown(registry: Registry) -> None:
    import_step_modules(["examples.steps"], registry)
    with pytest.raises(UnknownTarget, match="unknown target 'examples.steps:nothing_here'"):
        check_plan(plan_of([{"target": "examples.steps:nothing_here"}]), registry, ("examples.steps",))


@pytest.mark.parametrize("strategy", ["all", "collect", "race", "any_success"])
def test_every_strategy_is_supported(registry: Registry, strategy: str) -> None:
    check_plan(plan_of(strategy=strategy), registry, ())


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_concurrency", 2), ("timeout_seconds", 5.0), ("retry_failed", True), ("terminate_losers", True)],
)
def test_block_control_fields_are_supported(registry: Registry, field: str, value: Any) -> None:
    check_plan(plan_of(**{field: value}), registry, ())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_key", "out"),
        ("required_permission_level", "admin"),
        ("allowed_capabilities", ["gpu"]),
    ],
)
def test_unsupported_block_fields_are_refused(registry: Registry, field: str, value: Any) -> None:
    with pytest.raises(NotSupportedYet, match=f"{field} is not supported yet") as info:
        check_plan(plan_of(**{field: value}), registry, ())
    assert info.value.path == f"{PATH}.{field}"
    assert isinstance(info.value, CompileError)


def test_a_worker_pool_outside_a_program_is_refused(registry: Registry) -> None:
    with pytest.raises(CompileError, match="worker_pool 'gpu' is not a pool of this program") as info:
        check_plan(plan_of([{"target": "fetch", "worker_pool": "gpu"}]), registry, ())
    assert info.value.path.endswith("steps[0].worker_pool")


def test_an_unknown_reducer_is_refused(registry: Registry) -> None:
    with pytest.raises(CompileError, match="unknown reducer 'top3'; built in: sum, count, concat, merge") as info:
        check_plan(plan_of(strategy="map_reduce", reduce_function="top3"), registry, ())
    assert info.value.path == f"{PATH}.reduce_function"
    assert not isinstance(info.value, NotSupportedYet)


def test_a_registered_reducer_passes(registry: Registry) -> None:
    registry.add_reducer("top3", lambda results: sorted(results)[-3:])
    check_plan(plan_of(strategy="map_reduce", reduce_function="top3"), Registry(parent=registry), ())


def test_paths_name_the_workflow_node(registry: Registry) -> None:
    program = load_program(
        {
            "parallel_blocks": [{"name": "batch", "output_key": "x", "steps": [{"target": "fetch"}]}],
            "workflows": [
                {
                    "name": "w",
                    "steps": [
                        {"name": "first", "target": "fetch"},
                        {"name": "second", "block": "batch", "depends_on": ["first"]},
                    ],
                }
            ],
        }
    )
    with pytest.raises(NotSupportedYet) as info:
        check_plan(make_plan(program), registry, ())
    assert info.value.path == "workflow[w].second.output_key"


def test_a_program_path_names_the_block(registry: Registry) -> None:
    program = load_program(
        {
            "name": "p",
            "parallel_blocks": [
                {"name": "ok", "steps": [{"target": "fetch"}]},
                {"name": "bad", "depends_on": ["ok"], "steps": [{"target": "missing"}]},
            ],
        }
    )
    with pytest.raises(UnknownTarget) as info:
        check_plan(make_plan(program), registry, ())
    assert info.value.path == "program[p].bad.steps[0]"


def visibility_program(reliability: str, timeout: float) -> Plan:
    return make_plan(
        load_program(
            {
                "worker_pools": [{"name": "p", "queue_name": "q"}],
                "task_queues": [{"name": "q", "reliability": reliability, "visibility_timeout": 60}],
                "parallel_blocks": [
                    {
                        "name": "b",
                        "steps": [{"name": "s", "target": "fetch", "worker_pool": "p", "timeout_seconds": timeout}],
                    }
                ],
            }
        )
    )


@pytest.mark.parametrize(
    ("reliability", "timeout", "broker"),
    [
        ("at_least_once", 49.0, "redis://h/0"),
        ("at_least_once", 55.0, "amqp://h//"),
        ("at_most_once", 55.0, "redis://h/0"),
    ],
)
def test_a_step_that_ends_within_the_visibility_timeout_passes(reliability: str, timeout: float, broker: str) -> None:
    check_visibility(visibility_program(reliability, timeout), broker)


def test_an_at_least_once_step_longer_than_the_redis_visibility_timeout_is_refused() -> None:
    with pytest.raises(
        CompileError, match=r"may run 55s \(killed 10s later\), not less than the Redis visibility timeout \(60s\)"
    ) as caught:
        check_visibility(visibility_program("at_least_once", 55.0), "redis://h/0")
    assert caught.value.path == "program[program].b.steps[0].timeout_seconds"
