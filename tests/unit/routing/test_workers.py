"""Worker options and environments for pools, and what a pool cannot be asked."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.errors import RoutingError
from namel3ss_celery.routing import find_pool, instance_concurrency, stop_timeout, worker_argv, worker_env
from namel3ss_celery.routing.workers import WorkerOptions, drop_given_options, worker_options
from namel3ss_celery.spec import ProgramSpec, load_program

BASE = ["-Q", "q", "-n", "p@%h", "--prefetch-multiplier=1"]


def program(queues: list[dict[str, Any]] | None = None, **pool: Any) -> ProgramSpec:
    return load_program({"worker_pools": [{"name": "p", "queue_name": "q", **pool}], "task_queues": queues or []})


@pytest.mark.parametrize(
    ("pool", "extra"),
    [
        ({}, ["--autoscale=10,1"]),
        ({"min_workers": 0, "max_workers": 4}, ["--autoscale=4,0"]),
        ({"auto_scaling": False, "max_workers": 6}, ["--concurrency=6"]),
        ({"auto_scaling": False, "worker_config": {"concurrency": 3}}, ["--concurrency=3"]),
        ({"max_memory_mb": 512}, ["--autoscale=10,1", "--max-memory-per-child=524288"]),
        ({"timeout_seconds": 60}, ["--autoscale=10,1", "--soft-time-limit=60", "--time-limit=70"]),
        ({"timeout_seconds": 2.5}, ["--autoscale=10,1", "--soft-time-limit=2.5", "--time-limit=12.5"]),
        (
            {"auto_scaling": False, "worker_config": {"pool": "threads", "concurrency": 20, "loglevel": "INFO"}},
            ["--pool=threads", "--concurrency=20", "--loglevel=INFO"],
        ),
        ({"worker_config": {"max_tasks_per_child": 100}}, ["--autoscale=10,1", "--max-tasks-per-child=100"]),
        (
            {"auto_scaling": False, "worker_config": {"pool": "gevent"}, "timeout_seconds": 5},
            ["--pool=gevent", "--concurrency=10", "--soft-time-limit=5", "--time-limit=15"],
        ),
    ],
)
def test_worker_argv_says_what_the_pool_says(pool: dict[str, Any], extra: list[str]) -> None:
    assert worker_argv(program(**pool), "p", "redis://h/0") == BASE + extra


@pytest.mark.parametrize(
    ("pool", "options"),
    [
        ({}, {"prefetch_multiplier": 1, "pool": "prefork", "autoscale": (10, 1)}),
        ({"auto_scaling": False, "max_workers": 6}, {"prefetch_multiplier": 1, "pool": "prefork", "concurrency": 6}),
        (
            {"min_workers": 2, "max_workers": 4, "max_memory_mb": 512, "timeout_seconds": 2.5},
            {
                "prefetch_multiplier": 1,
                "pool": "prefork",
                "autoscale": (4, 2),
                "max_memory_per_child": 524288,
                "soft_time_limit": 2.5,
                "time_limit": 12.5,
            },
        ),
        (
            {"auto_scaling": False, "worker_config": {"pool": "threads", "concurrency": 20, "loglevel": "INFO"}},
            {"prefetch_multiplier": 1, "pool": "threads", "concurrency": 20, "loglevel": "INFO"},
        ),
        (
            {"worker_config": {"max_tasks_per_child": 100}, "timeout_seconds": 60},
            {
                "prefetch_multiplier": 1,
                "pool": "prefork",
                "autoscale": (10, 1),
                "max_tasks_per_child": 100,
                "soft_time_limit": 60.0,
                "time_limit": 70.0,
            },
        ),
    ],
)
def test_worker_options_are_the_pools_settings_by_celery_worker_parameter(
    pool: dict[str, Any], options: WorkerOptions
) -> None:
    assert worker_options(program(**pool), "p", "redis://h/0") == options


@pytest.mark.parametrize(
    "pool",
    [
        {},
        {"auto_scaling": False, "worker_config": {"pool": "threads", "concurrency": 20, "loglevel": "INFO"}},
        {"max_memory_mb": 64, "timeout_seconds": 2.5, "worker_config": {"max_tasks_per_child": 3}},
    ],
)
def test_worker_argv_writes_worker_options_as_flags(pool: dict[str, Any]) -> None:
    spec = program(**pool)
    flags = [
        f"--{key.replace('_', '-')}" for key, value in worker_options(spec, "p", "redis").items() if value != "prefork"
    ]
    written = [option.split("=")[0] for option in worker_argv(spec, "p", "redis")[4:]]
    assert written == flags


def test_worker_options_refuse_what_worker_argv_refuses() -> None:
    with pytest.raises(RoutingError, match="worker pool 'p': auto_scaling needs the prefork pool"):
        worker_options(program(worker_config={"pool": "threads"}), "p", "redis")
    with pytest.raises(RoutingError, match=r"may run 105s .* visibility timeout \(100s\)"):
        worker_options(program([{"name": "q", "visibility_timeout": 100}], timeout_seconds=95), "p", "redis")
    assert worker_options(program(worker_config={"pool": "threads"}), "p", "redis", concurrency=4)["concurrency"] == 4


SIZED = WorkerOptions(prefetch_multiplier=1, pool="prefork", autoscale=(3, 1), soft_time_limit=2.0, time_limit=12.0)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ((), ["prefetch_multiplier", "pool", "autoscale", "soft_time_limit", "time_limit"]),
        (("concurrency",), ["prefetch_multiplier", "pool", "soft_time_limit", "time_limit"]),
        (("autoscale", "soft_time_limit"), ["prefetch_multiplier", "pool", "time_limit"]),
        (("pool", "prefetch_multiplier", "queues", "hostname"), ["autoscale", "soft_time_limit", "time_limit"]),
    ],
)
def test_options_given_on_the_command_line_are_dropped(given: tuple[str, ...], kept: list[str]) -> None:
    left = drop_given_options(SIZED, given)
    assert list(left) == kept
    assert all(value == dict(SIZED)[key] for key, value in left.items())
    fixed = WorkerOptions(prefetch_multiplier=1, pool="prefork", concurrency=4)
    assert "concurrency" not in drop_given_options(fixed, ["autoscale"])  # one choice: either drops both


def test_a_fixed_concurrency_replaces_the_pools_own_scaling() -> None:
    spec = program(worker_config={"pool": "threads", "concurrency": 8})  # auto_scaling left on: pods scale
    assert worker_argv(spec, "p", "amqp://h//", concurrency=8) == [*BASE, "--pool=threads", "--concurrency=8"]
    assert instance_concurrency(spec.worker_pools[0]) == 8
    assert instance_concurrency(program().worker_pools[0]) == 1


def test_an_unknown_pool_is_refused_listing_the_known_ones() -> None:
    spec = load_program({"worker_pools": [{"name": "cpu", "queue_name": "cpu"}, {"name": "io", "queue_name": "io"}]})
    with pytest.raises(RoutingError, match="no worker pool named 'gpu'; known pools: cpu, io"):
        worker_argv(spec, "gpu", "redis")
    with pytest.raises(RoutingError, match="known pools: none"):
        find_pool(load_program({"parallel_blocks": [{"name": "b", "steps": [{"target": "t"}]}]}), "gpu")


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"worker_config": {"pool": "threads"}}, "auto_scaling needs the prefork pool; the threads pool cannot grow"),
        ({"worker_config": {"pool": "solo"}}, "the solo pool cannot grow"),
        ({"worker_config": {"concurrency": 4}}, "worker_config.concurrency fixes the process count"),
        ({"auto_scaling": False, "max_memory_mb": 64, "worker_config": {"pool": "threads"}}, "max_memory_mb recycles"),
        ({"auto_scaling": False, "timeout_seconds": 5, "worker_config": {"pool": "threads"}}, "timeout_seconds needs"),
        ({"worker_config": {"prefetch": 4}}, r"unknown worker_config keys \['prefetch'\]"),
        ({"worker_config": {"pool": "fibers"}}, "worker_config.pool 'fibers' is not one of prefork"),
        ({"auto_scaling": False, "worker_config": {"concurrency": 0}}, "concurrency must be a whole number"),
        ({"auto_scaling": False, "worker_config": {"concurrency": "8"}}, "concurrency must be a whole number"),
    ],
)
def test_what_a_pool_cannot_do_is_refused_naming_the_pool(pool: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutingError, match=f"worker pool 'p': .*{message}"):
        worker_argv(program(**pool), "p", "redis")


def test_an_exactly_once_queue_cannot_get_a_worker() -> None:
    with pytest.raises(RoutingError, match="exactly_once, which Celery cannot give"):
        worker_argv(program([{"name": "q", "reliability": "exactly_once"}]), "p", "redis")


def test_a_time_limit_beyond_the_redis_visibility_timeout_is_refused() -> None:
    spec = program([{"name": "q", "visibility_timeout": 100}], timeout_seconds=95)
    with pytest.raises(RoutingError, match=r"may run 105s .* visibility timeout \(100s\)"):
        worker_argv(spec, "p", "redis://h/0")
    assert "--time-limit=105" in worker_argv(spec, "p", "amqp://h//")  # RabbitMQ has none
    at_most_once = program(
        [{"name": "q", "visibility_timeout": 100, "reliability": "at_most_once"}], timeout_seconds=95
    )
    assert "--time-limit=105" in worker_argv(at_most_once, "p", "redis")  # acknowledged at start


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(RoutingError, match="unsupported broker"):
        worker_argv(program(), "p", "kafka://h")


def test_worker_env_and_stop_timeout() -> None:
    spec = program(environment_variables={"OMP_NUM_THREADS": "2", "_X": "a b"}, timeout_seconds=30)
    pool = spec.worker_pools[0]
    assert worker_env(pool) == {"OMP_NUM_THREADS": "2", "_X": "a b"}
    assert stop_timeout(pool) == 50
    assert stop_timeout(program().worker_pools[0]) is None


@pytest.mark.parametrize("name", ["1ST", "A-B", "A B", ""])
def test_environment_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(RoutingError, match=f"worker pool 'p': environment variable name '{name}'"):
        worker_env(program(environment_variables={name: "v"}).worker_pools[0])
