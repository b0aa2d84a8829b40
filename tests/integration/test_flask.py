"""The Flask example app: runs posted through its views execute on a real ``celery -A examples.flask_app worker``,
inside the worker's Flask app context."""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .workers import REPO, WorkerProcess, free_port

pytestmark = pytest.mark.integration

WAIT = 60.0


@dataclass
class FlaskCluster:
    """The Flask app of the test process (it dispatches) and the worker process (it runs the steps)."""

    app: Flask
    client: FlaskClient
    worker: WorkerProcess
    greeting: str


@pytest.fixture(scope="module")
def flask_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskCluster]:
    """``celery -A examples.flask_app worker`` on Redis, configured through ``FLASK_*`` variables as a
    deployment would be; the test process builds the same app with the same broker and queue, but a
    greeting of its own, so a step that reads the worker's config proves where it ran."""
    from examples.flask_app import create_app

    queue = f"n3flask-{uuid.uuid4().hex[:8]}"
    greeting = f"Hello from worker {uuid.uuid4().hex[:6]}"
    env = {
        "FLASK_CELERY__broker_url": redis_url,
        "FLASK_CELERY__result_backend": redis_url,
        "FLASK_CELERY__task_default_queue": queue,
        "FLASK_CELERY__broker_connection_retry_on_startup": "true",
        "FLASK_GREETING": greeting,
        "NAMEL3SS_CELERY_PROGRAM": str(REPO / "examples" / "flask_app" / "events.yaml"),
    }
    celery_config = {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_default_queue": queue,
        "task_ignore_result": True,
    }
    app = create_app({"CELERY": celery_config, "GREETING": "Hello from the test process"})
    celery = app.extensions["celery"]
    worker = WorkerProcess("examples.flask_app", env, tmp_path_factory.mktemp("flask-workers"))
    try:
        worker.wait_ready(celery)
        yield FlaskCluster(app, app.test_client(), worker, greeting)
    finally:
        worker.stop()
        gc.collect()
        app.extensions["namel3ss_celery"].n3.close()
        celery.close()
        celery.backend.client.close()


def post_run(cluster: FlaskCluster, spec: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    response = cluster.client.post("/runs", json={"spec": spec, "context": context or {}})
    assert response.status_code == 202, response.get_data(as_text=True)
    run_id = response.get_json()["run_id"]
    assert isinstance(run_id, str) and run_id
    return run_id


def poll_until_done(cluster: FlaskCluster, run_id: str, timeout: float = WAIT) -> dict[str, Any]:
    """GET /runs/<id> until the run is no longer running; fail, with the worker's log, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        response = cluster.client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        body: dict[str, Any] = response.get_json()
        if body["status"] != "running":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still running after {timeout}s:\n{cluster.worker.log()}")
        time.sleep(0.1)


def test_a_posted_workflow_runs_on_the_worker_inside_its_flask_app_context(flask_cluster: FlaskCluster) -> None:
    spec = {
        "name": "welcome",
        "steps": [
            {"name": "count", "target": "count_words", "text": "one two three"},
            {"name": "hello", "target": "greet", "who": "Ada", "depends_on": ["count"]},
            {"name": "info", "target": "app_info", "depends_on": ["count"]},
        ],
    }
    body = poll_until_done(flask_cluster, post_run(flask_cluster, spec))

    assert body["status"] == "completed", body
    outputs = body["result"]["outputs"]
    assert outputs["count"] == 3
    # greet is an ``n3.step`` of the app; it read GREETING from the worker's Flask config, not this process's.
    assert outputs["hello"] == f"{flask_cluster.greeting}, Ada"
    # app_info is a module-level ``@step``; current_app is the example app, and it saw the earlier node.
    assert outputs["info"] == {"app": "examples.flask_app", "outputs": {"count": 3}}
    for block in body["result"]["blocks"].values():
        for result in block["results"]:
            assert result["metadata"]["executed_on"] == "celery"
            assert result["metadata"]["worker"] == flask_cluster.worker.hostname


def test_post_answers_at_once_and_get_shows_progress_until_the_result(flask_cluster: FlaskCluster) -> None:
    spec = {"name": "slow", "steps": [{"name": "slow", "target": "count_words", "text": "a b", "delay": 2}]}
    started = time.monotonic()
    run_id = post_run(flask_cluster, spec)
    assert time.monotonic() - started < 2  # the step takes 2 seconds; the request did not wait for it

    running = flask_cluster.client.get(f"/runs/{run_id}").get_json()
    assert running["status"] == "running"
    assert [(p["node"], p["done"], p["total"]) for p in running["progress"]] == [("slow", 0, 1)]

    body = poll_until_done(flask_cluster, run_id)
    assert body["status"] == "completed"
    assert body["result"]["final_result"] == {"slow": 2}


def test_a_failing_step_shows_as_failed(flask_cluster: FlaskCluster) -> None:
    spec = {
        "name": "checks",
        "strategy": "collect",
        "steps": [
            {"name": "empty", "target": "check_text", "text": "  "},
            {"name": "fine", "target": "check_text", "text": "ok"},
        ],
    }
    body = poll_until_done(flask_cluster, post_run(flask_cluster, spec))

    assert body["status"] == "completed"  # collect keeps each failure in its result
    final = body["result"]["final_result"]
    assert final["empty"]["status"] == "failed"
    assert "the text is empty" in final["empty"]["error"]
    assert final["fine"]["result"] == "ok"

    body = poll_until_done(flask_cluster, post_run(flask_cluster, {**spec, "strategy": "all"}))
    assert body["status"] == "failed"
    assert "the text is empty" in (body["result"]["error_message"] or "")
    statuses = {r["task_id"]: r["status"] for r in body["result"]["results"]}
    assert statuses["empty"] == "failed"


def test_bad_requests_are_refused_before_anything_is_published(flask_cluster: FlaskCluster) -> None:
    client = flask_cluster.client
    unknown = client.post("/runs", json={"spec": {"name": "b", "steps": [{"target": "no_such_step"}]}})
    assert unknown.status_code == 400
    assert "no_such_step" in unknown.get_json()["error"]

    bad = client.post("/runs", json={"spec": {"name": "b", "strategy": "sometimes", "steps": [{"target": "greet"}]}})
    assert bad.status_code == 400
    assert bad.get_json()["path"] == "strategy"

    assert client.post("/runs", data="not json").status_code == 400
    assert client.get("/runs/no-such-run").status_code == 404


def test_an_event_posted_to_a_view_starts_its_trigger_on_the_worker(flask_cluster: FlaskCluster) -> None:
    n3 = flask_cluster.app.extensions["namel3ss_celery"].n3
    start = n3.events.store().newest()
    response = flask_cluster.client.post("/events", json={"type": "webhook", "data": {"kind": "signup"}})
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    deadline = time.monotonic() + WAIT
    while True:
        ended = [
            e
            for _i, e in n3.events.store().read(start, count=1000)
            if e.event_type == "workflow_completed" and e.data.get("trigger_event_id") == event_id
        ]
        if ended:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no run for event {event_id}:\n{flask_cluster.worker.log()}")
        time.sleep(0.1)
    (completed,) = ended
    result = n3.run(completed.data["instance_id"]).get(timeout=WAIT)
    assert result.final_result == {"step_0": f"{flask_cluster.greeting}, world"}  # greet ran on the worker
    bad = flask_cluster.client.post("/events", json={"type": "nonsense"})
    assert bad.status_code == 400 and "unknown event type 'nonsense'" in bad.get_json()["error"]


def test_post_answers_503_naming_the_broker_when_it_cannot_be_reached(redis_url: str) -> None:
    """The broker is down (nothing listens on its port): the view answers 503 with the error, which names the
    broker without its password, and nothing was recorded for a run."""
    from examples.flask_app import create_app

    broker = f"redis://:sekrit-word@127.0.0.1:{free_port()}/0"
    app = create_app({"CELERY": {"broker_url": broker, "result_backend": redis_url, "task_ignore_result": True}})
    n3 = app.extensions["namel3ss_celery"].n3
    spec = {"name": "count", "steps": [{"target": "count_words", "text": "one two"}]}
    try:
        response = app.test_client().post("/runs", json={"spec": spec})
        assert response.status_code == 503, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert error.startswith("cannot reach the broker redis://:**@127.0.0.1:"), error
        assert "nothing was published or recorded" in error and "sekrit-word" not in error
    finally:
        n3.close()
        app.extensions["celery"].close()
