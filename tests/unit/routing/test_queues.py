"""Pool queues as kombu declarations, priorities on both brokers, and the Redis transport options."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.transport.redis import Channel as RedisChannel

from namel3ss_celery.errors import RoutingError
from namel3ss_celery.routing import (
    DEFAULT_PRIORITY,
    Broker,
    broker_kind,
    broker_priority,
    pool_queues,
    redis_priority_lists,
    transport_options,
    visibility_timeout,
)
from namel3ss_celery.spec import ProgramSpec, load_program


def program(pools: list[str] | None = None, queues: list[dict[str, Any]] | None = None) -> ProgramSpec:
    return load_program(
        {
            "worker_pools": [{"name": name, "queue_name": name} for name in (pools or ["cpu", "io"])],
            "task_queues": queues or [],
        }
    )


@pytest.mark.parametrize(
    ("broker", "kind"),
    [
        ("redis://localhost:6379/0", Broker.REDIS),
        ("rediss://h:6380/1", Broker.REDIS),
        ("sentinel://h:26379", Broker.REDIS),
        ("redis", Broker.REDIS),
        ("amqp://guest@localhost//", Broker.RABBITMQ),
        ("pyamqp://h//", Broker.RABBITMQ),
        ("rabbitmq", Broker.RABBITMQ),
        ("memory://", Broker.MEMORY),
    ],
)
def test_broker_kind_reads_urls_and_names(broker: str, kind: Broker) -> None:
    assert broker_kind(broker) is kind


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(RoutingError, match="unsupported broker 'sqs://'.*amqp.*redis"):
        broker_kind("sqs://")


def test_every_pool_queue_is_durable_with_priorities() -> None:
    queues = pool_queues(program(["cpu", "io"]))
    assert [q.name for q in queues] == ["cpu", "io"]
    for queue in queues:
        assert queue.durable
        assert queue.routing_key == queue.name
        assert queue.exchange.name == queue.name and queue.exchange.type == "direct"
        assert queue.queue_arguments == {"x-max-priority": 10}


def test_a_dead_letter_queue_is_declared_and_named_by_its_queue() -> None:
    spec = program(["cpu", "io"], [{"name": "cpu", "dead_letter_queue": "cpu.dead"}, {"name": "io"}])
    queues = {q.name: q for q in pool_queues(spec)}
    assert list(queues) == ["cpu", "io", "cpu.dead"]
    assert queues["cpu"].queue_arguments == {
        "x-max-priority": 10,
        "x-dead-letter-exchange": "cpu.dead",
        "x-dead-letter-routing-key": "cpu.dead",
    }
    assert queues["io"].queue_arguments == {"x-max-priority": 10}
    dead = queues["cpu.dead"]
    assert dead.durable and dead.exchange.name == "cpu.dead" and dead.routing_key == "cpu.dead"
    assert not dead.queue_arguments


def test_two_queues_may_share_one_dead_letter_queue_which_may_be_a_task_queue() -> None:
    spec = program(
        ["cpu", "io"],
        [
            {"name": "cpu", "dead_letter_queue": "dead"},
            {"name": "io", "dead_letter_queue": "dead"},
            {"name": "dead", "reliability": "at_least_once"},
        ],
    )
    assert [q.name for q in pool_queues(spec)] == ["cpu", "io", "dead"]


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ([{"name": "gpu"}], "task queue 'gpu' is consumed by no worker pool \\(pool queue names: cpu, io\\)"),
        ([{"name": "cpu", "dead_letter_queue": "io"}], "dead-letters into 'io', which a worker pool consumes"),
        ([{"name": "cpu", "dead_letter_queue": "cpu"}], "dead-letters into 'cpu', which a worker pool consumes"),
    ],
)
def test_queue_links_that_cannot_work_are_refused(queues: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        pool_queues(program(["cpu", "io"], queues))


@pytest.mark.parametrize(
    ("priority", "redis", "rabbitmq"),
    [(0, 9, 0), (1, 8, 1), (DEFAULT_PRIORITY, 5, 4), (8, 1, 8), (9, 0, 9)],
)
def test_priorities_map_to_each_broker(priority: int, redis: int, rabbitmq: int) -> None:
    assert broker_priority(priority, "redis://h/0") == redis
    assert broker_priority(priority, "amqp://h//") == rabbitmq


def test_priority_mapping_is_monotonic_and_inverted_between_brokers() -> None:
    levels = range(10)
    redis = [broker_priority(p, "redis") for p in levels]
    rabbitmq = [broker_priority(p, "rabbitmq") for p in levels]
    # Redis serves its lowest number first, RabbitMQ its highest: the spec's order survives both.
    assert redis == sorted(redis, reverse=True) and len(set(redis)) == 10
    assert rabbitmq == sorted(rabbitmq) and len(set(rabbitmq)) == 10
    assert all(r + q == 9 for r, q in zip(redis, rabbitmq, strict=True))
    assert set(redis) <= set(transport_options(program(), "redis")["priority_steps"])
    assert max(rabbitmq) <= pool_queues(program())[0].queue_arguments["x-max-priority"]


@pytest.mark.parametrize("priority", [-1, 10, 255])
def test_priorities_outside_the_range_are_refused(priority: int) -> None:
    with pytest.raises(RoutingError, match=f"priority {priority} is outside 0 \\(lowest\\) .. 9 \\(highest\\)"):
        broker_priority(priority, "redis")


def test_redis_priority_lists_follow_kombu_naming() -> None:
    lists = redis_priority_lists("cpu")
    assert lists[0] == "cpu"
    assert lists[1:] == [f"cpu{RedisChannel.sep}{n}" for n in range(1, 10)]
    channel = object.__new__(RedisChannel)  # kombu's own naming, without a connection
    channel.priority_steps = transport_options(program(), "redis")["priority_steps"]
    assert lists == [channel._q_for_pri("cpu", n) for n in range(10)]


def test_redis_transport_options() -> None:
    spec = program(["cpu"], [{"name": "cpu", "visibility_timeout": 900}])
    assert transport_options(spec, "redis://h:6379/0") == {
        "priority_steps": list(range(10)),
        "queue_order_strategy": "priority",
        "visibility_timeout": 900,
    }


@pytest.mark.parametrize("broker", ["amqp://h//", "memory://"])
def test_other_brokers_need_no_transport_options(broker: str) -> None:
    assert transport_options(program(), broker) == {}


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        ([], 300.0),
        ([{"name": "cpu"}, {"name": "io"}], 300.0),
        ([{"name": "cpu", "visibility_timeout": 60}, {"name": "io"}], 60.0),
        ([{"name": "cpu", "visibility_timeout": 900}, {"name": "io", "visibility_timeout": 900}], 900.0),
    ],
)
def test_one_visibility_timeout(queues: list[dict[str, Any]], expected: float) -> None:
    assert visibility_timeout(program(["cpu", "io"], queues)) == expected


def test_visibility_timeouts_that_disagree_are_refused_naming_both_queues() -> None:
    spec = program(
        ["cpu", "io"], [{"name": "cpu", "visibility_timeout": 600}, {"name": "io", "visibility_timeout": 30.5}]
    )
    with pytest.raises(RoutingError, match=r"different ones: cpu \(600s\), io \(30.5s\)"):
        transport_options(spec, "redis://h/0")
    assert transport_options(spec, "amqp://h//") == {}  # RabbitMQ has no visibility timeout


def test_a_retry_that_waits_past_the_visibility_timeout_is_refused_on_redis() -> None:
    spec = program(["cpu"], [{"name": "cpu", "visibility_timeout": 30, "max_retry_delay": 60, "max_retries": 8}])
    with pytest.raises(RoutingError, match="'cpu' waits up to 60s before a retry, not less than .* \\(30s\\)"):
        transport_options(spec, "redis")
    assert transport_options(spec, "rabbitmq") == {}
