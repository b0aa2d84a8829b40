"""Distributed configs with real workers: fallback_to_local, failure modes, max_wait_seconds."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from .workers import client, pool_worker

pytestmark = pytest.mark.integration

WAIT = 60


def write_program(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    config: dict[str, Any],
    queue: dict[str, Any] | None = None,
    strategy: str = "all",
    pool: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    name = f"q{uuid.uuid4().hex[:6]}"
    program = {
        "worker_pools": [{"name": "p", "queue_name": name, "auto_scaling": False, "max_workers": 1, **(pool or {})}],
        "task_queues": [{"name": name, **(queue or {})}] if queue is not None else [],
        "distributed_configs": [{"worker_pool": "p", **config}],
        "parallel_blocks": [{"name": "b", "strategy": strategy, "steps": [{**s, "worker_pool": "p"} for s in steps]}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(program))
    return path, name


def calls(tag: str, url: str) -> int:
    client_ = redis.Redis.from_url(url)
    try:
        return int(client_.get(f"n3test:{tag}:calls") or 0)
    finally:
        client_.close()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_fallback_to_local_runs_steps_here_only_while_no_worker_consumes_the_pool(
    broker: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    steps = [{"name": "a", "target": "echo", "value": 1}, {"name": "b", "target": "echo", "value": 2}]
    path, _queue = write_program(tmp_path, steps, {"fallback_to_local": True})
    n3 = client(broker_url, redis_url)
    worker = None
    try:
        alone = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert alone.overall_status == "completed" and alone.final_result == {"a": 1, "b": 2}
        assert [r.metadata["executed_on"] for r in alone.results] == ["local", "local"]

        worker = pool_worker("p", path, broker_url, redis_url, tmp_path)
        worker.wait_ready(n3.app)
        served = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert served.overall_status == "completed"
        assert [r.metadata["executed_on"] for r in served.results] == ["celery", "celery"]
        assert {r.metadata["worker"] for r in served.results} == {worker.hostname}
    finally:
        if worker is not None:
            worker.stop()
        n3.close()
        n3.app.backend.client.close()


@pytest.mark.parametrize(
    ("mode", "failures", "max_retries", "status", "expected_calls"),
    [
        ("retry_remote", 1, 2, "completed", 2),  # the pool retries it
        ("fail_fast", 1, 2, "failed", 1),  # no retry at all
        ("retry_local", 2, 1, "completed", 3),  # one remote retry fails, then once more on the same worker
    ],
)
def test_failure_modes_behave_as_named(
    mode: str, failures: int, max_retries: int, status: str, expected_calls: int, redis_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    steps = [{"name": "s", "target": "flaky", "failures": failures, "tag": tag}]
    queue = {"max_retries": max_retries, "retry_backoff": "fixed", "initial_retry_delay": 0.2}
    path, _queue = write_program(tmp_path, steps, {"failure_mode": mode}, queue)
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert block.overall_status == status, block.error_message
        assert calls(tag, redis_url) == expected_calls
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


def test_a_step_that_waits_past_max_wait_seconds_fails_saying_so(redis_url: str, tmp_path: Path) -> None:
    # One worker process: the second step waits for the first (3 s), longer than max_wait_seconds (1 s).
    steps = [{"name": "slow", "target": "sleep", "seconds": 3}, {"name": "late", "target": "echo", "value": 1}]
    path, _queue = write_program(tmp_path, steps, {"max_wait_seconds": 1}, strategy="collect")
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        slow, late = block.results
        assert slow.status == "completed"
        assert late.status == "failed" and "waited longer than max_wait_seconds (1.0s)" in (late.error or "")
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()
