"""No worker consumes a run's queue: the timeout, ``status`` and the CLI's progress line say which queue.

RabbitMQ counts each queue's consumers; on Redis the workers are asked which queues they consume.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from namel3ss_celery import Namel3ssCelery, Settings, WaitTimeout

from .app import make_app
from .conftest import STEP_MODULES
from .workers import CLI, REPO, WorkerProcess

pytestmark = pytest.mark.integration


def n3_on(broker: str, backend: str, queue: str) -> Namel3ssCelery:
    import tests.integration.steps  # noqa: F401 - the steps the blocks name

    app = make_app(broker, backend, queue)
    return Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,)))


def block(steps: int) -> dict[str, object]:
    return {"name": "b", "strategy": "all", "steps": [{"target": "echo", "value": i} for i in range(steps)]}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_timeout_names_the_queue_nobody_consumes(broker: str, redis_url: str, amqp_url: str) -> None:
    queue = f"n3test-idle-{uuid.uuid4().hex[:8]}"
    n3 = n3_on(redis_url if broker == "redis" else amqp_url, redis_url, queue)
    try:
        small = n3.dispatch(block(2))  # published by dispatch itself: its steps wait on the queue
        with pytest.raises(WaitTimeout) as info:
            small.get(timeout=1.5)
        assert info.value.idle_queues == {queue: ["node 'b'"]}
        assert f"no worker consumes queue {queue!r}, where node 'b' waits" in str(info.value)
        large = n3.dispatch(block(20))  # a worker would publish its steps: its launch waits
        assert large.idle_queues() == {queue: ["its launch"]}
        with pytest.raises(WaitTimeout) as short:
            large.get(timeout=0.2)  # a short look does not spend a second asking the workers
        assert short.value.idle_queues == {}
        small.cancel()
        large.cancel()
    finally:
        n3.close()


def test_once_a_worker_consumes_the_queue_the_run_goes_on(redis_url: str, tmp_path: Path) -> None:
    queue = f"n3test-idle-{uuid.uuid4().hex[:8]}"
    n3 = n3_on(redis_url, redis_url, queue)
    env = {"N3_TEST_BROKER": redis_url, "N3_TEST_BACKEND": redis_url, "N3_TEST_QUEUE": queue}
    worker = None
    try:
        run = n3.dispatch(block(2))
        assert run.idle_queues() == {queue: ["node 'b'"]}
        worker = WorkerProcess(
            "tests.integration.app", {**env, "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES}, tmp_path, queues=[queue]
        )
        worker.wait_ready(n3.app)
        assert run.get(timeout=30).overall_status == "completed"
        assert run.idle_queues() == {}  # an ended run waits on nothing
    finally:
        if worker is not None:
            worker.stop()
        n3.close()


def test_the_cli_names_the_idle_queue_in_its_progress_and_its_timeout(redis_url: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
    env = {**clean, "PYTHONPATH": str(REPO)}
    queue = "celery"  # the default queue of the CLI's own app
    ran = subprocess.run(
        [CLI, "run", "examples/pipeline.yaml", "--steps", "examples.steps", "--broker", redis_url, "--timeout", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    n3 = Namel3ssCelery(settings=Settings.from_mapping({"CELERY_BROKER_URL": redis_url}))
    try:
        for run_id in re.findall(r"run ([0-9a-f]{32}) still", ran.stderr):
            n3.run(run_id).cancel()  # its queued steps will not run when a later test's worker reads this queue
    finally:
        n3.close()
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"(no worker consumes queue {queue!r})" in ran.stderr  # on the progress line
    assert "still running after waiting 3s" in ran.stderr  # the whole wait, not its last slice
    assert f"no worker consumes queue {queue!r}, where node 'search' waits" in ran.stderr


def test_status_names_the_idle_queue_and_needs_a_broker(redis_url: str) -> None:
    queue = f"n3test-idle-{uuid.uuid4().hex[:8]}"
    n3 = n3_on(redis_url, redis_url, queue)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
    try:
        run = n3.dispatch(block(2))
        status = subprocess.run(
            [CLI, "status", run.id, "--broker", redis_url, "--json"],
            cwd=REPO,
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f'"{queue}"' in status.stdout and "node 'b'" in status.stdout
        no_broker = subprocess.run(
            [CLI, "status", run.id], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60
        )
        assert no_broker.returncode == 2
        assert "no broker was given: give --broker (or CELERY_BROKER_URL), or -A/--app" in no_broker.stderr
        run.cancel()
    finally:
        n3.close()
