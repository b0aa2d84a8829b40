"""Ordinary production faults, with real workers: every run still reaches a final state.

Each test kills or stops something a run depends on and asserts the run's final state and how
long it took to get there.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from namel3ss_celery import ParallelExecutionResult
from tests.waiting import wait_until

from .conftest import Cluster, start_cluster, stop_cluster
from .steps import started_key
from .workers import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def lone_worker(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """One prefork worker on Redis, for a test that kills it (not shared with other tests)."""
    running = start_cluster(redis_url, redis_url, "prefork", tmp_path)
    yield running
    stop_cluster(running)


def test_a_deadline_fires_on_time_though_the_worker_holding_its_block_died(
    lone_worker: Cluster, redis_url: str, tmp_path: Path
) -> None:
    """The block's steps never look at their deadline; their worker dies with them (and with whatever it had
    prefetched). A worker started afterwards never received any of the block's messages, yet ends it."""
    tag = uuid.uuid4().hex
    steps = [{"name": f"s{i}", "target": "stubborn", "seconds": 60, "tag": tag} for i in range(2)]
    handle = lone_worker.n3.dispatch({"name": "r", "strategy": "race", "steps": steps, "timeout_seconds": 6})
    dispatched = time.monotonic()
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.llen(started_key(tag)) == 2, 30, lambda: lone_worker.worker.log())
    finally:
        client.close()
    kill_with_children(lone_worker.worker)
    other = WorkerProcess("tests.integration.app", lone_worker.env, tmp_path, queues=[lone_worker.queue])
    try:
        other.wait_ready(lone_worker.app)
        result = handle.get(timeout=30)
        ended = time.monotonic() - dispatched
    finally:
        other.stop()
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "timeout"
    assert [r.metadata.get("outcome") for r in result.results] == ["stopping", "stopping"]  # never reported
    assert ended < 6 + 10, f"the deadline fired {ended - 6:.1f}s late"


def kill_with_children(worker: WorkerProcess) -> None:
    """SIGKILL a worker and its pool processes at once, as when its machine goes away."""
    children = [pid for pid in _pids() if _parent(pid) == worker.process.pid]
    for pid in [worker.process.pid, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own
    worker.process.wait(10)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # gone meanwhile
