"""Distributed configs: checked against their pools, and what they make of a pool's route."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.compiler.steps import step_message
from namel3ss_celery.errors import RoutingError
from namel3ss_celery.plan.kinds import Join
from namel3ss_celery.routing import pool_queues
from namel3ss_celery.routing.allowed import refusal
from namel3ss_celery.routing.distribution import avoided, check_distribution, distribution_of, regions_of
from namel3ss_celery.spec import load_program

POOL = {"name": "gpu", "queue_name": "gpu", "capabilities": ["cuda"], "max_memory_mb": 2048, "max_cpu_cores": 4}


def program(config: dict[str, Any], pool: dict[str, Any] | None = None, queue: dict[str, Any] | None = None) -> Any:
    return load_program(
        {
            "worker_pools": [pool or POOL],
            "task_queues": [queue] if queue else [],
            "distributed_configs": [{"worker_pool": "gpu", **config}],
            "parallel_blocks": [{"name": "b", "steps": [{"target": "t", "worker_pool": "gpu"}]}],
        }
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"worker_pool": "cpu"}, "no such worker pool; pools: gpu"),
        ({"queue_name": "other"}, "queue_name 'other' is not the pool's queue 'gpu'"),
        ({"required_capabilities": ["cuda", "fp8"]}, "requires capabilities ['fp8'] that the pool does not list"),
        ({"required_memory_mb": 4096}, "requires 4096 MB but the pool's max_memory_mb is 2048"),
        ({"required_cpu_cores": 8}, "requires 8.0 CPU cores but the pool's max_cpu_cores is 4"),
        ({"distribution_policy": "locality_aware"}, "locality_aware needs locality_preference"),
        ({"locality_preference": "eu"}, "locality_preference is set but distribution_policy is round_robin"),
        ({"distribution_policy": "sticky", "worker_affinity": "gpu@a"}, "choose one"),
        ({"worker_affinity": "gpu@old-1", "avoid_workers": ["gpu@old-*"]}, "is also in avoid_workers"),
    ],
)
def test_a_config_asking_what_its_pool_cannot_give_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_plan(program(config))  # before anything is published


def test_a_pool_takes_one_config() -> None:
    spec = program({})
    twice = spec.model_copy(update={"distributed_configs": [*spec.distributed_configs, *spec.distributed_configs]})
    with pytest.raises(RoutingError, match="a pool takes one distributed config"):
        check_distribution(twice)


def test_a_config_the_pool_satisfies_passes() -> None:
    config = {"required_capabilities": ["cuda"], "required_memory_mb": 1024, "required_cpu_cores": 2}
    route = make_plan(program(config)).pools["gpu"]
    assert route.queue == "gpu" and not route.sticky and route.affinity is None


def test_locality_aware_sends_steps_to_the_regions_queue_declared_like_the_pools() -> None:
    spec = program({"distribution_policy": "locality_aware", "locality_preference": "eu"})
    assert make_plan(spec).pools["gpu"].queue == "gpu.eu" and regions_of(spec, "gpu") == ["eu"]
    queues = {q.name: q for q in pool_queues(spec)}
    assert queues["gpu.eu"].queue_arguments == queues["gpu"].queue_arguments


def test_worker_affinity_sends_steps_to_that_workers_direct_queue() -> None:
    assert make_plan(program({"worker_affinity": "gpu@host1"})).pools["gpu"].queue == "gpu@host1.dq2"


@pytest.mark.parametrize(
    ("mode", "retries", "retry_local"), [("retry_remote", 2, False), ("fail_fast", 0, False), ("retry_local", 2, True)]
)
def test_failure_modes(mode: str, retries: int, retry_local: bool) -> None:
    queue = {"name": "gpu", "max_retries": 2, "initial_retry_delay": 1.0}
    plan = make_plan(program({"failure_mode": mode}, queue=queue))
    route = plan.pools["gpu"]
    assert route.retry_local is retry_local
    payload = step_message(
        plan.nodes[0].block, 0, run_id="run1", node="b", context={}, join=Join.COUNT, pools=plan.pools
    ).encode()
    assert payload["retries"] == retries
    assert payload.get("deliveries") == 3  # at_least_once: a lost worker redelivers, whatever the failure mode


def test_sticky_max_wait_and_fallback_reach_the_route() -> None:
    config = {"distribution_policy": "sticky", "max_wait_seconds": 5, "fallback_to_local": True}
    route = make_plan(program(config)).pools["gpu"]
    assert route.sticky and route.max_wait == 5 and route.fallback_to_local


@pytest.mark.parametrize(
    ("name", "expected"), [("gpu@old-3", "gpu@old-*"), ("gpu@new-1", None), ("gpu@spare", "gpu@spare")]
)
def test_avoid_workers_matches_names_and_patterns(name: str, expected: str | None) -> None:
    config = distribution_of(program({"avoid_workers": ["gpu@old-*", "gpu@spare"]}), "gpu")
    assert avoided(config, name) == expected


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("tool", "fetch", None),
        ("tool", "plan", "does not allow tool target 'plan' (allowed_tools: fetch)"),
        ("agent", "plan", None),
        ("agent", "fetch", "does not allow agent target 'fetch' (allowed_agents: plan)"),
        ("prompt", "fetch", None),  # every kind but agent is checked against allowed_tools
    ],
)
def test_agents_are_checked_against_allowed_agents_and_the_rest_against_allowed_tools(
    kind: str, target: str, expected: str | None
) -> None:
    refused = refusal("p", kind, target, ["fetch"], ["plan"])
    assert refused == (None if expected is None else f"worker pool 'p' {expected}")


def test_an_empty_list_allows_any_target_of_its_kind() -> None:
    assert refusal("p", "agent", "anything", ["fetch"], []) is None


@pytest.mark.parametrize(
    ("config", "queue", "expected"),
    [
        ({}, {"name": "gpu"}, (86400.0, "message_retention")),  # the IR default applies
        ({"max_wait_seconds": 5}, {"name": "gpu", "message_retention": 60}, (5.0, "max_wait_seconds")),
        ({"max_wait_seconds": 90}, {"name": "gpu", "message_retention": 60}, (60.0, "message_retention")),
        ({"max_wait_seconds": 5}, None, (5.0, "max_wait_seconds")),
    ],
)
def test_a_step_waits_at_most_the_lower_of_max_wait_seconds_and_message_retention(
    config: dict[str, Any], queue: dict[str, Any] | None, expected: tuple[float, str]
) -> None:
    route = make_plan(program(config, queue=queue)).pools["gpu"]
    assert (route.max_wait, route.max_wait_field) == expected
