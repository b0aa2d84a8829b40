"""A prefork pool child lost right after its step succeeded, on Redis: the step's stored success stands.

Celery 5.7's worker, told a child was lost (``WorkerLostError``), first looks in the result backend for a
SUCCESS the child stored: found, it neither fails the task nor (under late ack) delivers it again. Steps
keep their results for that (``ignore_result=False``); these tests fail if a step's success is not stored.

Each block runs the dying step beside a sibling that returns only once the worker has replaced the lost
child, so the worker has decided about the lost step while its block still waits: a step wrongly failed ends
an ``all`` block as failed (fail_fast), and a step wrongly delivered again runs twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from namel3ss_celery import Namel3ssCelery, Settings

from .app import make_app
from .conftest import Cluster, stop_cluster
from .lost_steps import DIED_KEY, RUNS_KEY, TARGET
from .workers import WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60
STEP_MODULES = ("tests.integration.steps", "tests.integration.lost_steps")
SIBLING = 20  # seconds the sibling waits, at most, for the worker to replace the lost child


def start_worker(redis_url: str, log_dir: Path, late_ack: bool) -> Cluster:
    """A prefork worker (``-A tests.integration.lost_steps``) on its own queue, Redis as broker and backend."""
    queue = f"n3test-{uuid.uuid4().hex[:8]}"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "N3_TEST_LATE_ACK": "1" if late_ack else "0",
        "NAMEL3SS_CELERY_STEP_MODULES": ",".join(STEP_MODULES),
    }
    app = make_app(redis_url, redis_url, queue)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=STEP_MODULES))
    worker = WorkerProcess(
        "tests.integration.lost_steps", env, log_dir, pool="prefork", concurrency=2, queues=[queue, f"{queue}.reports"]
    )
    try:
        worker.wait_ready(app)
    except BaseException:
        worker.stop()
        n3.close()
        app.close()
        raise
    return Cluster(app, n3, worker, queue, env)


@pytest.fixture
def early_ack(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    running = start_worker(redis_url, tmp_path, late_ack=False)
    yield running
    stop_cluster(running)


@pytest.fixture
def late_ack(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    running = start_worker(redis_url, tmp_path, late_ack=True)
    yield running
    stop_cluster(running)


@pytest.fixture
def tag(redis_url: str) -> Iterator[str]:
    """This test's tag; its keys in the test database are deleted after it."""
    value = uuid.uuid4().hex
    yield value
    store = redis.Redis.from_url(redis_url)
    try:
        store.delete(RUNS_KEY.format(tag=value), DIED_KEY.format(tag=value))
    finally:
        store.close()


def counter(redis_url: str, tag: str) -> tuple[int, bool]:
    """How many times the step ran for ``tag``, and whether its pool child was ended."""
    store = redis.Redis.from_url(redis_url)
    try:
        runs, died = store.mget(RUNS_KEY.format(tag=tag), DIED_KEY.format(tag=tag))
    finally:
        store.close()
    return int(runs or 0), died is not None


def dying_and_sibling(tag: str) -> list[dict[str, Any]]:
    """The step whose pool child dies after it succeeded, and a sibling that outlives that child."""
    return [
        {"name": "dies", "target": TARGET, "tag": tag},
        {"name": "sibling", "target": "outlives_lost_child", "tag": tag, "seconds": SIBLING, "value": "sibling"},
    ]


def test_a_child_lost_after_its_step_succeeded_does_not_fail_the_block(
    early_ack: Cluster, redis_url: str, tag: str
) -> None:
    steps = dying_and_sibling(tag)
    block = {"name": "lost_after_success", "strategy": "all", "fail_fast": True, "steps": steps}
    result = early_ack.n3.dispatch(block).get(timeout=WAIT)
    assert counter(redis_url, tag) == (1, True), early_ack.worker.log()  # it ran once, and its child died
    assert result.overall_status == "completed", f"{result.error_message}\n{early_ack.worker.log()}"
    assert result.final_result == {
        "dies": {"tag": tag, "runs": 1, "acks_late": False, "reject_on_worker_lost": False},
        "sibling": "sibling",
    }
    assert result.failed_tasks == 0 and result.completed_tasks == 2


def test_late_ack_does_not_deliver_again_a_step_that_succeeded_before_its_child_was_lost(
    late_ack: Cluster, redis_url: str, tag: str
) -> None:
    steps = dying_and_sibling(tag)
    block = {"name": "lost_after_success", "strategy": "collect", "steps": steps}
    result = late_ack.n3.dispatch(block).get(timeout=WAIT)
    assert result.overall_status == "completed", f"{result.error_message}\n{late_ack.worker.log()}"
    final = {name: (entry["status"], entry["result"]) for name, entry in result.final_result.items()}
    assert final == {
        "dies": ("completed", {"tag": tag, "runs": 1, "acks_late": True, "reject_on_worker_lost": True}),
        "sibling": ("completed", "sibling"),
    }
    # A message put back on its queue would have run again by now; look a while longer all the same.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert counter(redis_url, tag) == (1, True), late_ack.worker.log()
        time.sleep(0.1)
