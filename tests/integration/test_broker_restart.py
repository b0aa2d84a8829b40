"""The broker restarts while a block runs, under a worker with running and prefetched steps.

RabbitMQ (a node of the test's own): the worker reconnects, the steps waiting in the broker (durable
queue, persistent messages) are delivered again, and the run completes. Redis as broker (a private
``redis-server`` with AOF): kombu cannot put the messages the worker had prefetched back while Redis is
down; the worker keeps their tags and puts them back once connected again (``worker.reconnect``), so the
run completes too, long before its deadline (without that they waited an hour in kombu's ``unacked``
hash, and the block ended at its deadline)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from namel3ss_celery import ParallelExecutionResult
from namel3ss_celery.worker.compat import HELD, keep_unrestored_messages, restore_unrestored
from tests.private_rabbit import PrivateRabbit, available
from tests.private_redis import PrivateRedis
from tests.waiting import wait_until

from .conftest import start_cluster, stop_cluster
from .steps import started_key

pytestmark = pytest.mark.integration


@pytest.fixture
def private_rabbit() -> Iterator[PrivateRabbit]:
    if not available():
        pytest.skip("rabbitmq-server is not installed: no private RabbitMQ to restart")
    node = PrivateRabbit()
    try:
        yield node
    finally:
        node.stop()
        node.remove()


def test_a_broker_restart_while_a_block_runs_ends_the_run_completed(
    private_rabbit: PrivateRabbit, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(private_rabbit.url, redis_url, "prefork", tmp_path / "workers", concurrency=2)
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"s{i}", "target": "patient", "seconds": 2, "value": i, "tag": tag} for i in range(6)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps})
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: client.llen(started_key(tag)) >= 2, 30, lambda: cluster.worker.log())
        finally:
            client.close()
        private_rabbit.stop()
        restarted = time.monotonic()
        private_rabbit.start()
        result = handle.get(timeout=90)
        recovered = time.monotonic() - restarted
    finally:
        log = cluster.worker.log()
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", f"{result.error_message}\n{log[-6000:]}"
    assert sorted(entry["result"] for entry in result.final_result.values()) == list(range(6))
    assert recovered < 60


@pytest.fixture
def broker_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: no private Redis to restart")
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_redis_broker_restart_while_a_block_runs_ends_the_run_completed(
    broker_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)  # broker, backend and store: one Redis
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(broker_redis.url, broker_redis.url, "prefork", tmp_path / "workers", concurrency=2)
    deadline = 60  # a safety net: the run must complete well before it
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"s{i}", "target": "patient", "seconds": 2, "value": i, "tag": tag} for i in range(6)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps, "timeout_seconds": deadline})
        client = redis.Redis.from_url(broker_redis.url)  # the steps mark their start in the backend's Redis
        try:
            wait_until(lambda: client.llen(started_key(tag)) >= 2, 30, lambda: cluster.worker.log())
        finally:
            client.close()
        broker_redis.stop()
        restarted = time.monotonic()
        broker_redis.start()
        result = handle.get(timeout=deadline + 30)
        recovered = time.monotonic() - restarted
    finally:
        log = cluster.worker.log()
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", f"{result.error_message}\n{log[-6000:]}"
    assert sorted(entry["result"] for entry in result.final_result.values()) == list(range(6))
    assert "put back in their queues" in log  # the prefetched steps came back at the reconnection
    assert recovered < deadline / 2


def test_messages_a_lost_redis_connection_held_go_back_to_their_queue_once_connected_again(
    broker_redis: PrivateRedis,
) -> None:
    keep_unrestored_messages()
    HELD.take()  # nothing of another test's
    connection = Connection(broker_redis.url)
    queue = connection.SimpleQueue("n3-restore")
    queue.put({"n": 1})
    held = queue.get(timeout=5)  # delivered, not acknowledged: in kombu's unacked hash
    assert held.payload == {"n": 1}
    broker_redis.stop()
    connection.close()  # puts back what it holds: the server is away, so the tag is kept, nothing raised
    assert HELD.take() == ([held.delivery_tag], [])
    HELD.keep([held.delivery_tag])
    broker_redis.start()
    with Connection(broker_redis.url) as again:
        assert restore_unrestored(again.default_channel) == 1
        assert restore_unrestored(again.default_channel) == 0  # put back once
        back = again.SimpleQueue("n3-restore").get(timeout=5)
        assert back.payload == {"n": 1}
        back.ack()
