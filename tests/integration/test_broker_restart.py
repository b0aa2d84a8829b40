"""The broker restarts while a block runs, under a worker with running and prefetched steps.

RabbitMQ (a node of the test's own): the worker reconnects, the steps waiting in the broker (durable
queue, persistent messages) are delivered again, and the run completes. Redis as broker (a private
``redis-server`` with AOF): kombu cannot put the messages the worker had prefetched back while Redis is
down, so they wait in its ``unacked`` hash for the visibility timeout; the block still ends, at its
deadline, never ``running`` for ever."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from namel3ss_celery import ParallelExecutionResult
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


def test_a_redis_broker_restart_while_a_block_runs_ends_the_block_by_its_deadline_at_the_latest(
    broker_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)  # broker, backend and store: one Redis
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(broker_redis.url, broker_redis.url, "prefork", tmp_path / "workers", concurrency=2)
    deadline = 15
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"s{i}", "target": "patient", "seconds": 2, "value": i, "tag": tag} for i in range(6)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps, "timeout_seconds": deadline})
        dispatched = time.monotonic()
        client = redis.Redis.from_url(broker_redis.url)  # the steps mark their start in the backend's Redis
        try:
            wait_until(lambda: client.llen(started_key(tag)) >= 2, 30, lambda: cluster.worker.log())
        finally:
            client.close()
        broker_redis.stop()
        broker_redis.start()
        result = handle.get(timeout=deadline + 30)
        ended = time.monotonic() - dispatched
    finally:
        log = cluster.worker.log()
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status in ("completed", "timeout"), f"{result.error_message}\n{log[-6000:]}"
    statuses = {entry["status"] for entry in result.final_result.values()}
    assert statuses <= {"completed", "cancelled"}  # a step ran to its end, or never started before the deadline
    assert ended < deadline + 15
