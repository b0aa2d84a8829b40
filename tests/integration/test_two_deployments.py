"""Two deployments sharing one coordination store database: a watchdog does only its own broker's work while
a worker of the run's broker lives."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from namel3ss_celery import ParallelExecutionResult
from namel3ss_celery.apps import broker_identity
from namel3ss_celery.engine.lost import HEARTBEAT_TTL
from namel3ss_celery.plan import fields
from tests.waiting import wait_until

from .conftest import deployment, dispatch_and_die_while_publishing, start_cluster, stop_cluster
from .workers import WorkerProcess

pytestmark = pytest.mark.integration


def test_a_launch_left_by_a_dead_dispatcher_is_finished_through_its_own_broker(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A RabbitMQ deployment and a Redis one keep their runs in the same store. A run dispatched on RabbitMQ
    whose dispatching process died while publishing waits for its lease; the Redis worker's watchdog, whose
    messages no RabbitMQ worker would ever see, leaves it to the RabbitMQ workers, and one of them (started
    later) finishes it."""
    (tmp_path / "redis").mkdir()
    redis_side = start_cluster(redis_url, redis_url, "prefork", tmp_path / "redis")
    app, n3, queue, env = deployment(amqp_url, redis_url)
    rabbit_worker: WorkerProcess | None = None
    try:
        rabbit = broker_identity(app)
        assert rabbit != broker_identity(redis_side.app)
        # A RabbitMQ worker lives (its heartbeat names its broker) while the lease runs out.
        n3.store.beat(f"rabbit-{uuid.uuid4().hex[:6]}@test", 4 * HEARTBEAT_TTL, rabbit)
        steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(6)]
        run_id = uuid.uuid4().hex
        dispatch_and_die_while_publishing(env, {"name": "b", "strategy": "collect", "steps": steps}, run_id)
        assert n3.store.get_fields(run_id, [fields.BROKER]) == [rabbit]

        left = f"run {run_id} went through {rabbit}, not {broker_identity(redis_side.app)}: left to its workers"
        wait_until(lambda: left in redis_side.worker.log(), 45, lambda: "never left: " + redis_side.worker.log())
        rabbit_worker = WorkerProcess("tests.integration.app", env, tmp_path, queues=[queue])
        rabbit_worker.wait_ready(app)
        started = time.monotonic()
        result = n3.run(run_id).get(timeout=60)
    finally:
        if rabbit_worker is not None:
            rabbit_worker.stop()
        stop_cluster(redis_side)
        n3.close()
        app.close()
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message
    assert {k: v["result"] for k, v in result.final_result.items()} == {f"s{i}": i for i in range(6)}
    assert time.monotonic() - started < 30
