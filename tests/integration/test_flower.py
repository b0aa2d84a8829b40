"""Flower, started for real on the same app: it shows each step as its own task, a failing step as FAILURE,
a stopped or cancelled step as REVOKED, and so a step dropped because its run's record is gone or because its
block had ended (a repeat delivery)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.waiting import wait_until

from .conftest import Cluster, start_cluster, stop_cluster
from .steps import MARKER_TTL, gate_key, started_key
from .workers import REPO, free_port

pytestmark = pytest.mark.integration

AUTH = "admin:change-me"
WAIT = 60


def get(url: str, auth: str | None = AUTH) -> Any:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def flower(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A worker sending task events (-E) and Flower with basic auth, both on the test app."""
    folder = tmp_path_factory.mktemp("flower")
    cluster = start_cluster(redis_url, redis_url, "prefork", folder)
    port = free_port()
    log = open(folder / "flower.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            f"--basic-auth={AUTH}",
        ],
        cwd=REPO,
        env={**os.environ, **cluster.env, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(f"{url}/api/workers?refresh=1")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"Flower did not start:\n{(folder / 'flower.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)
        cluster.app.control.enable_events()  # the worker sends task events from now on (as -E would)
        yield cluster, url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        stop_cluster(cluster)


def tasks_by_name(url: str, run_id: str) -> dict[str, dict[str, Any]]:
    tasks = get(f"{url}/api/tasks")
    return {t["name"]: t for t in tasks.values() if run_id in str(t.get("args"))}


def test_flower_shows_each_step_as_its_own_task_and_a_failed_step_as_failure(flower: tuple[Cluster, str]) -> None:
    cluster, url = flower
    block = {
        "name": "watched",
        "strategy": "collect",
        "steps": [
            {"name": "fine", "target": "echo", "value": 1},
            {"name": "broken", "target": "fail", "message": "boom"},
        ],
    }
    run = cluster.n3.dispatch(block)
    assert run.get(timeout=WAIT).overall_status == "completed"  # collect keeps the failure in its result
    deadline = time.monotonic() + WAIT
    seen: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        seen = tasks_by_name(url, run.id)
        if (
            seen.get("n3.step.fail", {}).get("state") == "FAILURE"
            and seen.get("n3.step.echo", {}).get("state") == "SUCCESS"
        ):
            break
        time.sleep(0.3)
    assert seen["n3.step.echo"]["state"] == "SUCCESS", seen
    assert seen["n3.step.fail"]["state"] == "FAILURE" and "boom" in seen["n3.step.fail"]["exception"]
    # Flower lists a step by block and step name (the message's argsrepr), not by its whole payload.
    assert seen["n3.step.echo"]["args"] == f"(step 'fine' of block 'watched', run {run.id})"


def flower_states(url: str, run_id: str) -> dict[str, str]:
    """Each step's state in Flower by step name (from the task's argsrepr)."""
    tasks = get(f"{url}/api/tasks")
    states: dict[str, str] = {}
    for task in tasks.values():
        args = str(task.get("args"))
        if run_id in args and args.startswith("(step '"):
            states[args.split("'")[1]] = str(task.get("state"))
    return states


def test_flower_shows_a_stopped_race_loser_as_revoked(flower: tuple[Cluster, str]) -> None:
    """The loser saw its block decided and stopped: Flower shows REVOKED, as the result backend does."""
    cluster, url = flower
    block = {
        "name": "raced",
        "strategy": "race",
        "steps": [
            {"name": "slow", "target": "patient", "seconds": 30, "value": "slow"},
            {"name": "fast", "target": "echo", "value": "fast"},
        ],
    }
    run = cluster.n3.dispatch(block)
    assert run.get(timeout=WAIT).overall_status == "completed"
    seen: dict[str, str] = {}

    def ended() -> bool:
        seen.update(flower_states(url, run.id))
        return seen.get("slow") == "REVOKED" and seen.get("fast") == "SUCCESS"

    wait_until(ended, WAIT, lambda: f"Flower shows {seen}")


def test_flower_shows_the_running_steps_of_a_cancelled_run_as_revoked(flower: tuple[Cluster, str]) -> None:
    cluster, url = flower
    tag = f"flower-{uuid.uuid4().hex[:8]}"
    block = {
        "name": "cancelled",
        "strategy": "all",
        "steps": [{"name": f"held{i}", "target": "gated", "gate": tag, "tag": tag, "seconds": 60} for i in range(2)],
    }
    client = redis.Redis.from_url(cluster.env["N3_TEST_BACKEND"])
    try:
        run = cluster.n3.dispatch(block)
        wait_until(lambda: client.llen(started_key(tag)) == 2, WAIT, "both steps to start")
        run.cancel()
        assert run.get(timeout=WAIT).overall_status == "cancelled"
        seen: dict[str, str] = {}

        def ended() -> bool:
            seen.update(flower_states(url, run.id))
            return seen.get("held0") == "REVOKED" and seen.get("held1") == "REVOKED"

        wait_until(ended, WAIT, lambda: f"Flower shows {seen}")
    finally:
        client.set(gate_key(tag), 1, ex=MARKER_TTL)  # never needed when the cancel worked
        client.close()


def sent_by_hand(cluster: Cluster, block: dict[str, Any], run_id: str) -> Any:
    """Step 0 of ``block`` in run ``run_id``, published as its task, with a task id of its own."""
    from namel3ss_celery.compiler.steps import step_message
    from namel3ss_celery.plan.kinds import Join
    from namel3ss_celery.spec import ParallelBlockSpec, load_any

    spec = load_any(block)
    assert isinstance(spec, ParallelBlockSpec)
    message = step_message(spec, 0, run_id=run_id, node=spec.name, context={}, join=Join.COUNT)
    return cluster.app.send_task("n3.step.echo", args=[message.encode()], queue=cluster.queue)


def flower_state(url: str, task_id: str) -> str:
    try:
        return str(get(f"{url}/api/task/info/{task_id}").get("state"))
    except urllib.error.HTTPError as missing:  # 404 until Flower heard of the task
        missing.close()
        return ""


def test_flower_shows_a_step_of_an_expired_run_as_revoked(flower: tuple[Cluster, str]) -> None:
    """A step whose run's record is gone is dropped, and ends REVOKED: in Flower and in the result backend."""
    cluster, url = flower
    block = {"name": "gone", "strategy": "all", "steps": [{"name": "lost", "target": "echo", "value": 1}]}
    sent = sent_by_hand(cluster, block, uuid.uuid4().hex)  # a run never recorded (or expired long ago)
    wait_until(
        lambda: flower_state(url, sent.id) == "REVOKED", WAIT, lambda: f"Flower shows {flower_state(url, sent.id)}"
    )
    assert sent.state == "REVOKED"
    assert "the run's record expired" in cluster.worker.log()


def test_flower_shows_a_repeat_delivery_of_a_step_whose_block_ended_as_revoked(flower: tuple[Cluster, str]) -> None:
    cluster, url = flower
    block = {"name": "again", "strategy": "collect", "steps": [{"name": "once", "target": "echo", "value": 1}]}
    run = cluster.n3.dispatch(block)
    first = run.get(timeout=WAIT)
    assert first.final_result["once"]["result"] == 1
    sent = sent_by_hand(cluster, block, run.id)  # the same step of the same run, once more
    wait_until(
        lambda: flower_state(url, sent.id) == "REVOKED", WAIT, lambda: f"Flower shows {flower_state(url, sent.id)}"
    )
    assert sent.state == "REVOKED"
    assert run.get(timeout=WAIT).to_dict() == first.to_dict()  # the run is as it was


def test_flower_refuses_its_api_without_the_password(flower: tuple[Cluster, str]) -> None:
    _cluster, url = flower
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{url}/api/tasks", auth=None)
    info.value.close()  # the error holds the response open
    assert info.value.code == 401
