"""Distributed configs with real workers: fallback_to_local, failure modes, max_wait_seconds."""

from __future__ import annotations

import os
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


def slow_then_late(
    redis_url: str, tmp_path: Path, config: dict[str, Any], queue: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """On one worker process, a 3-second step then a step that waits for it: both their results."""
    steps = [{"name": "slow", "target": "sleep", "seconds": 3}, {"name": "late", "target": "echo", "value": 1}]
    path, _queue = write_program(tmp_path, steps, config, queue, strategy="collect")
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        slow, late = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"].results
        return slow, late
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


def test_a_step_that_waits_past_max_wait_seconds_fails_saying_so(redis_url: str, tmp_path: Path) -> None:
    # The second step waits for the first (3 s), longer than max_wait_seconds (1 s).
    slow, late = slow_then_late(redis_url, tmp_path, {"max_wait_seconds": 1})
    assert slow.status == "completed"
    assert late.status == "failed" and "waited longer than max_wait_seconds (1.0s)" in (late.error or "")


def workers_of(block: Any) -> list[str]:
    return [r.metadata["worker"] for r in block.results]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_locality_aware_steps_run_only_on_workers_of_their_region(
    broker: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    steps = [{"name": f"s{i}", "target": "sleep", "seconds": 0.2} for i in range(6)]
    config = {"distribution_policy": "locality_aware", "locality_preference": "eu"}
    path, queue = write_program(tmp_path, steps, config)
    n3 = client(broker_url, redis_url)
    home = pool_worker("p", path, broker_url, redis_url, tmp_path, node="home")
    eu = pool_worker("p", path, broker_url, redis_url, tmp_path, "--region", "eu", node="eu")
    try:
        home.wait_ready(n3.app)
        eu.wait_ready(n3.app)
        block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert block.overall_status == "completed"
        assert set(workers_of(block)) == {eu.hostname}  # the home worker is idle but not in the region
        consumed = n3.app.control.inspect(destination=[eu.hostname], timeout=5).active_queues()[eu.hostname]
        assert {q["name"] for q in consumed} == {queue, f"{queue}.eu"}
    finally:
        home.stop()
        eu.stop()
        n3.close()
        n3.app.backend.client.close()


def test_a_region_the_pool_does_not_send_steps_to_stops_the_worker(redis_url: str, tmp_path: Path) -> None:
    path, _queue = write_program(tmp_path, [{"target": "echo"}], {})
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path, "--region", "mars", node="mars")
    try:
        assert worker.process.wait(WAIT) != 0
        assert "sends no steps to region 'mars'" in worker.log()
    finally:
        worker.stop()


def test_sticky_steps_with_one_key_run_on_one_worker_in_every_run(redis_url: str, tmp_path: Path) -> None:
    prefix = uuid.uuid4().hex[:6]
    keys = [f"{prefix}-{k}" for k in range(4)]
    # Eight steps, so that dispatch publishes them itself (pool workers do not consume the default queue).
    steps = [{"name": f"s{i}", "target": "sleep", "seconds": 0.1, "sticky_key": keys[i % len(keys)]} for i in range(8)]
    path, _queue = write_program(tmp_path, steps, {"distribution_policy": "sticky"}, pool={"max_workers": 2})
    n3 = client(redis_url, redis_url)
    first = pool_worker("p", path, redis_url, redis_url, tmp_path, node="first")
    second = pool_worker("p", path, redis_url, redis_url, tmp_path, node="second")
    try:
        first.wait_ready(n3.app)
        second.wait_ready(n3.app)
        owners: dict[str, set[str]] = {key: set() for key in keys}
        for _ in range(2):
            block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
            assert block.overall_status == "completed"
            for index, worker in enumerate(workers_of(block)):
                owners[keys[index % len(keys)]].add(worker)
        assert all(len(workers) == 1 for workers in owners.values()), owners
        assert set().union(*owners.values()) == {first.hostname, second.hostname}  # both took keys
    finally:
        first.stop()
        second.stop()
        n3.close()
        n3.app.backend.client.close()


def test_worker_affinity_pins_steps_to_one_worker(redis_url: str, tmp_path: Path) -> None:
    steps = [{"name": f"s{i}", "target": "sleep", "seconds": 0.1} for i in range(6)]
    node = os.uname().nodename
    path, _queue = write_program(tmp_path, steps, {"worker_affinity": f"chosen@{node}"})
    n3 = client(redis_url, redis_url)
    other = pool_worker("p", path, redis_url, redis_url, tmp_path, node="other")
    chosen = pool_worker("p", path, redis_url, redis_url, tmp_path, node="chosen")
    try:
        other.wait_ready(n3.app)
        chosen.wait_ready(n3.app)
        block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert block.overall_status == "completed" and set(workers_of(block)) == {chosen.hostname}
    finally:
        other.stop()
        chosen.stop()
        n3.close()
        n3.app.backend.client.close()


def test_a_worker_named_in_avoid_workers_refuses_to_serve_the_pool(redis_url: str, tmp_path: Path) -> None:
    path, _queue = write_program(tmp_path, [{"target": "echo"}], {"avoid_workers": ["old-*@*"]})
    n3 = client(redis_url, redis_url)
    old = pool_worker("p", path, redis_url, redis_url, tmp_path, node="old-1")
    new = pool_worker("p", path, redis_url, redis_url, tmp_path, node="new-1")
    try:
        assert old.process.wait(WAIT) != 0
        assert "may not serve pool 'p'" in old.log() and "avoids 'old-*@*'" in old.log()
        new.wait_ready(n3.app)
        assert n3.dispatch(str(path)).get(timeout=WAIT).overall_status == "completed"
    finally:
        old.stop()
        new.stop()
        n3.close()
        n3.app.backend.client.close()


def test_a_retry_may_wait_max_wait_seconds_again_after_its_delay(redis_url: str, tmp_path: Path) -> None:
    # The retry waits 2 s, longer than max_wait_seconds (1 s): it must not count as waiting too long.
    tag = uuid.uuid4().hex
    steps = [{"name": "s", "target": "flaky", "failures": 1, "tag": tag}]
    queue = {"max_retries": 1, "retry_backoff": "fixed", "initial_retry_delay": 2}
    path, _queue = write_program(tmp_path, steps, {"max_wait_seconds": 1}, queue)
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        block = n3.dispatch(str(path)).get(timeout=WAIT).blocks["b"]
        assert block.overall_status == "completed", block.error_message
        assert calls(tag, redis_url) == 2
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


def test_fallback_to_local_carries_a_workflow_from_node_to_node(redis_url: str, tmp_path: Path) -> None:
    name = f"q{uuid.uuid4().hex[:6]}"
    program = {
        "worker_pools": [{"name": "p", "queue_name": name}],
        "distributed_configs": [{"worker_pool": "p", "fallback_to_local": True}],
        "workflows": [
            {
                "name": "w",
                "steps": [
                    {"name": "first", "target": "echo", "value": 1, "worker_pool": "p"},
                    {"name": "second", "target": "echo", "value": 2, "worker_pool": "p", "depends_on": ["first"]},
                ],
            }
        ],
    }
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(program))
    n3 = client(redis_url, redis_url)
    try:
        result = n3.dispatch(str(path)).get(timeout=WAIT)
        assert result.overall_status == "completed"
        assert result.outputs == {"first": 1, "second": 2}
        for block in result.blocks.values():
            assert block.results[0].metadata["executed_on"] == "local"
    finally:
        n3.close()
        n3.app.backend.client.close()


def test_a_step_older_than_its_queues_message_retention_fails_saying_so(redis_url: str, tmp_path: Path) -> None:
    slow, late = slow_then_late(redis_url, tmp_path, {}, {"message_retention": 1})
    assert slow.status == "completed"
    assert late.status == "failed" and "waited longer than message_retention (1.0s)" in (late.error or "")
