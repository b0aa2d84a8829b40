"""Task queues: retries with the queue's backoff, at_least_once redelivery after a worker is killed."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from namel3ss_celery import NotSupportedYet, RoutingError

from .workers import client, pool_worker

pytestmark = pytest.mark.integration

WAIT = 60


def program_file(tmp_path: Path, queue: dict[str, Any], steps: list[dict[str, Any]], pool: dict[str, Any]) -> Path:
    program = {"worker_pools": [pool], "task_queues": [queue], "parallel_blocks": [{"name": "b", "steps": steps}]}
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    return path


def test_a_failing_step_retries_with_its_queues_backoff(redis_url: str, tmp_path: Path) -> None:
    tag, name = uuid.uuid4().hex, uuid.uuid4().hex[:6]
    queue = {
        "name": name,
        "reliability": "at_most_once",
        "max_retries": 2,
        "retry_backoff": "linear",
        "initial_retry_delay": 0.5,
        "max_retry_delay": 5,
    }
    steps = [{"name": "s", "target": "timed_flaky", "failures": 2, "tag": tag, "worker_pool": "p"}]
    pool = {"name": "p", "queue_name": name, "auto_scaling": False, "max_workers": 1}
    path = program_file(tmp_path, queue, steps, pool)
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        result = n3.dispatch(str(path)).get(timeout=WAIT)
        block = result.blocks["b"]
        assert block.overall_status == "completed" and block.final_result == {"s": 3}
        assert block.total_tasks == 1  # retried twice, counted once
        store = redis.Redis.from_url(redis_url)
        times = [float(t) for t in store.lrange(f"n3test:{tag}:times", 0, -1)]
        store.close()
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # linear: 0.5 s, then 1.0 s
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_at_least_once_redelivers_a_step_whose_worker_was_killed(
    broker: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    tag, name = uuid.uuid4().hex, uuid.uuid4().hex[:6]
    queue = {"name": name, "reliability": "at_least_once", "max_retries": 1, "visibility_timeout": 3}
    steps = [{"name": "s", "target": "slow_first_time", "seconds": 30, "tag": tag, "worker_pool": "p"}]
    pool = {
        "name": "p",
        "queue_name": name,
        "auto_scaling": False,
        "max_workers": 1,
        "worker_config": {"pool": "threads"},
    }
    path = program_file(tmp_path, queue, steps, pool)
    n3 = client(broker_url, redis_url)
    first = pool_worker("p", path, broker_url, redis_url, tmp_path)
    second = None
    try:
        first.wait_ready(n3.app)
        handle = n3.dispatch(str(path))
        store = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 20
        while store.get(f"n3test:{tag}:deliveries") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.process.send_signal(signal.SIGKILL)  # mid-step: the message was never acknowledged
        first.process.wait(10)
        second = pool_worker("p", path, broker_url, redis_url, tmp_path)
        second.wait_ready(n3.app)
        result = handle.get(timeout=WAIT)
        store.close()
        assert result.overall_status == "completed"
        assert result.blocks["b"].final_result == {"s": {"delivery": 2, "acks_late": True}}
    finally:
        first.stop()
        if second is not None:
            second.stop()
        n3.close()
        n3.app.backend.client.close()


@pytest.mark.parametrize(
    ("queue", "error", "message"),
    [
        ({"reliability": "exactly_once"}, RoutingError, "exactly_once, which Celery cannot give"),
        ({"external_config": {"kind": "sqs"}}, NotSupportedYet, "external_config is not supported yet"),
    ],
)
def test_queue_contracts_not_given_are_refused(
    redis_url: str, tmp_path: Path, queue: dict[str, Any], error: type, message: str
) -> None:
    path = program_file(
        tmp_path, {"name": "q", **queue}, [{"target": "echo", "worker_pool": "p"}], {"name": "p", "queue_name": "q"}
    )
    n3 = client(redis_url, redis_url)
    try:
        with pytest.raises(error, match=message):
            n3.dispatch(str(path))
    finally:
        n3.close()
