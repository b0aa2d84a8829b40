"""Ordinary production faults, with real workers: every run still reaches a final state.

Each test kills or stops something a run depends on and asserts the run's final state and how
long it took to get there.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from namel3ss_celery import ParallelExecutionResult
from tests.private_redis import PrivateRedis
from tests.waiting import wait_until

from .conftest import Cluster, start_cluster, stop_cluster
from .steps import stalled_key, started_key
from .workers import WorkerProcess, kill_with_children

pytestmark = pytest.mark.integration


def test_a_deadline_fires_on_time_though_the_worker_holding_its_block_died(
    lone_worker: Cluster, redis_url: str, tmp_path: Path
) -> None:
    """The block's steps never look at their deadline; their worker dies with them (and with whatever it had
    prefetched). A worker started afterwards never received any of the block's messages, yet ends it."""
    tag = uuid.uuid4().hex
    steps = [{"name": f"s{i}", "target": "stubborn", "seconds": 60, "tag": tag} for i in range(2)]
    handle = lone_worker.n3.dispatch({"name": "r", "strategy": "race", "steps": steps, "timeout_seconds": 6})
    dispatched = time.monotonic()
    result = kill_once_started_and_wait(lone_worker, redis_url, tag, handle, tmp_path)
    ended = time.monotonic() - dispatched
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "timeout"
    assert [r.metadata.get("outcome") for r in result.results] == ["stopping", "stopping"]  # never reported
    assert ended < 6 + 10, f"the deadline fired {ended - 6:.1f}s late"


def kill_once_started_and_wait(
    cluster: Cluster, redis_url: str, tag: str, handle: Any, log_dir: Path, started: int = 2
) -> ParallelExecutionResult:
    """Once ``started`` steps tagged ``tag`` run, kill the cluster's worker whole, start another on its queue,
    and wait for the run's result (``WaitTimeout`` after a minute)."""
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.llen(started_key(tag)) == started, 30, lambda: cluster.worker.log())
    finally:
        client.close()
    return kill_and_wait_on_another(cluster, handle, log_dir)


def kill_and_wait_on_another(cluster: Cluster, handle: Any, log_dir: Path) -> ParallelExecutionResult:
    """Kill the cluster's worker whole, start another on its queue, and wait for the run's result
    (``WaitTimeout`` after a minute)."""
    kill_with_children(cluster.worker)
    other = WorkerProcess("tests.integration.app", cluster.env, log_dir, queues=[cluster.queue])
    try:
        other.wait_ready(cluster.app)
        result = handle.get(timeout=60)
    finally:
        other.stop()
    assert isinstance(result, ParallelExecutionResult)
    return result


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: no private Redis to restart")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_coordination_store_restart_while_steps_run_loses_nothing(
    private_redis: PrivateRedis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordination store restarts for about a second while the steps run and ask whether to stop (sync
    steps through cancelled(), an async one through the runner's watcher): each step still files its
    outcome, and the run completes. (The broker stays up: kombu's own recovery from a broker restart is
    Celery's, see docs/reliability.md.)"""
    monkeypatch.setenv("NAMEL3SS_CELERY_COORDINATION_URL", private_redis.url)  # the test process and its worker
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(redis_url, redis_url, "prefork", tmp_path / "workers", concurrency=3)
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"p{i}", "target": "patient", "seconds": 4, "value": i, "tag": tag} for i in range(2)]
        steps.append({"name": "a", "target": "async_patient", "seconds": 4, "value": "a"})
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps})
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: client.llen(started_key(tag)) == 2, 30, lambda: cluster.worker.log())
        finally:
            client.close()
        private_redis.stop()
        restarted = time.monotonic()
        private_redis.start()
        result = handle.get(timeout=60)
        recovered = time.monotonic() - restarted
    finally:
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message
    assert {name: entry["status"] for name, entry in result.final_result.items()} == {
        "p0": "completed",
        "p1": "completed",
        "a": "completed",
    }
    assert recovered < 30


def test_outcomes_the_store_refused_longer_than_a_worker_waits_are_filed_once_it_is_back(
    private_redis: PrivateRedis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordination store is down for longer than the worker waits for it (store_patience: 1 s) as two
    steps end: under default delivery their messages are acknowledged already, so each outcome is kept by
    its worker process and filed when the store is back; the run completes."""
    monkeypatch.setenv("NAMEL3SS_CELERY_COORDINATION_URL", private_redis.url)
    monkeypatch.setenv("NAMEL3SS_CELERY_STORE_PATIENCE", "1")
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(redis_url, redis_url, "prefork", tmp_path / "workers", concurrency=2)
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"s{i}", "target": "stubborn", "seconds": 1.5, "value": i, "tag": tag} for i in range(2)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps})
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: client.llen(started_key(tag)) == 2, 30, lambda: cluster.worker.log())
        finally:
            client.close()
        private_redis.stop()
        wait_until(
            lambda: cluster.worker.log().count("will be filed when it does") == 2,
            30,
            lambda: f"the steps did not hand their outcomes over:\n{cluster.worker.log()[-3000:]}",
        )
        private_redis.start()
        result = handle.get(timeout=60)
        # each process logs after doing what followed: the last may log just after the run ended
        wait_until(lambda: cluster.worker.log().count("its outcome was filed late") == 2, 30, cluster.worker.log)
    finally:
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message
    assert {name: entry["status"] for name, entry in result.final_result.items()} == {
        "s0": "completed",
        "s1": "completed",
    }


def test_steps_of_a_worker_killed_whole_are_filed_as_lost_and_their_block_ends(
    lone_worker: Cluster, redis_url: str, tmp_path: Path
) -> None:
    """Default delivery, no deadline: a worker and its pool processes die while running a block's steps.
    Another worker's watchdog sees the dead one's heartbeat run out and files its steps as lost."""
    tag = uuid.uuid4().hex
    steps = [{"name": f"s{i}", "target": "stubborn", "seconds": 120, "tag": tag} for i in range(2)]
    handle = lone_worker.n3.dispatch({"name": "c", "strategy": "collect", "steps": steps})
    dispatched = time.monotonic()
    result = kill_once_started_and_wait(lone_worker, redis_url, tag, handle, tmp_path)
    ended = time.monotonic() - dispatched
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed"  # collect: it completes, keeping each failure
    for name in ("s0", "s1"):
        entry = result.final_result[name]
        assert entry["status"] == "failed"
        assert f"its worker {lone_worker.worker.hostname} stopped answering" in entry["error"]
    assert ended < 45, f"the lost steps were filed {ended:.0f}s after dispatch"


def test_a_step_taken_but_not_yet_started_when_its_worker_is_killed_whole_is_filed_as_lost(
    lone_worker: Cluster, redis_url: str, tmp_path: Path
) -> None:
    """Default delivery, no deadline: Celery acknowledged the step's message as a pool process took it, and the
    worker dies whole before the step reaches its start guard (it stalls in ``task_prerun``). The step was held
    as it was taken (``worker.accepting``), so another worker's watchdog files it as lost and the block ends
    (before, nothing recorded it: the run stayed ``running``)."""
    tag = uuid.uuid4().hex
    steps = [{"name": "s0", "target": "stubborn", "seconds": 1, "tag": tag, "stall_before_start": 120}]
    handle = lone_worker.n3.dispatch({"name": "c", "strategy": "collect", "steps": steps})
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.llen(stalled_key(tag)) == 1, 30, lambda: lone_worker.worker.log())
    finally:
        client.close()
    hostname = lone_worker.worker.hostname

    def acknowledged() -> bool:  # the worker reports the step active once its message is acknowledged
        active = lone_worker.app.control.inspect([hostname], timeout=1.0).active()
        return bool(active and active.get(hostname))

    wait_until(acknowledged, 30, lambda: lone_worker.worker.log()[-3000:])
    result = kill_and_wait_on_another(lone_worker, handle, tmp_path)
    assert result.overall_status == "completed"  # collect: it completes, keeping the failure
    entry = result.final_result["s0"]
    assert entry["status"] == "failed"
    assert f"its worker {hostname} stopped answering" in entry["error"]


def test_an_outcome_kept_by_a_pool_process_that_then_died_is_filed_as_lost_by_its_worker(
    private_redis: PrivateRedis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordination store is down longer than the worker waits (store_patience: 1 s) as two steps end, so
    their pool processes keep their outcomes; one of them is killed before the store is back. Its worker lives
    on (and beats), so its own watchdog files that step as lost, naming the process; the other is filed late."""
    monkeypatch.setenv("NAMEL3SS_CELERY_COORDINATION_URL", private_redis.url)
    monkeypatch.setenv("NAMEL3SS_CELERY_STORE_PATIENCE", "1")
    (tmp_path / "workers").mkdir()
    cluster = start_cluster(redis_url, redis_url, "prefork", tmp_path / "workers", concurrency=2)
    try:
        tag = uuid.uuid4().hex
        steps = [{"name": f"s{i}", "target": "stubborn", "seconds": 1.5, "value": i, "tag": tag} for i in range(2)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps})
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: client.llen(started_key(tag)) == 2, 30, lambda: cluster.worker.log())
            victim = int(client.lindex(started_key(tag), 0) or 0)
        finally:
            client.close()
        private_redis.stop()
        wait_until(
            lambda: cluster.worker.log().count("will be filed when it does") == 2,
            30,
            lambda: f"the steps did not hand their outcomes over:\n{cluster.worker.log()[-3000:]}",
        )
        hostname = cluster.worker.hostname

        def idle() -> bool:  # the tasks returned: only their processes' late filing holds the outcomes now
            active = cluster.app.control.inspect([hostname], timeout=1.0).active()
            return active is not None and not active.get(hostname)

        wait_until(idle, 60, lambda: cluster.worker.log()[-3000:])
        os.kill(victim, signal.SIGKILL)
        private_redis.start()
        result = handle.get(timeout=60)
    finally:
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message  # collect keeps each failure
    statuses = {name: entry["status"] for name, entry in result.final_result.items()}
    assert sorted(statuses.values()) == ["completed", "failed"], statuses
    lost = next(entry for entry in result.final_result.values() if entry["status"] == "failed")
    assert f"its worker process {victim} on {cluster.worker.hostname} ended" in lost["error"]
