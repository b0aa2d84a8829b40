"""One trace from a request to every step: the SDK in this process and in a real prefork worker
(``tests.integration.otel_app``), both exporting to a Redis list this test reads."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from namel3ss_celery import Namel3ssCelery, Settings

from .app import make_app
from .conftest import STEP_MODULES
from .workers import WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60


def program(tag: str) -> dict[str, Any]:
    """The traced program; its race's winner ends once the loser runs (``tag`` marks the loser's start)."""
    return {
        "parallel_blocks": [
            {"name": "wide", "strategy": "all", "steps": [{"target": "echo", "value": i} for i in range(12)]},
            {
                "name": "fastest",
                "strategy": "race",
                "steps": [
                    {"name": "slow", "target": "patient", "seconds": 20, "value": "slow", "tag": tag},
                    {"name": "quick", "target": "echo", "value": "quick", "after": tag},
                ],
            },
        ],
        "workflows": [
            {
                "name": "traced",
                "steps": [
                    {"name": "fan", "block": "wide"},
                    {"name": "race_node", "block": "fastest", "depends_on": ["fan"]},
                    {"name": "last", "target": "echo", "value": "done", "depends_on": ["race_node"]},
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def traced(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Namel3ssCelery, str, Any]]:
    from opentelemetry import trace

    import tests.integration.steps  # noqa: F401
    from namel3ss_celery.integrations.opentelemetry import instrument
    from tests.integration import otel_app

    key = f"n3test:spans:{uuid.uuid4().hex}"
    queue = f"n3test-otel-{uuid.uuid4().hex[:8]}"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "N3_TEST_SPANS": key,
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
    }
    saved = {name: os.environ.get(name) for name in ("N3_TEST_BACKEND", "N3_TEST_SPANS")}
    os.environ["N3_TEST_BACKEND"], os.environ["N3_TEST_SPANS"] = redis_url, key
    provider = otel_app.setup_tracing()  # this process: the SDK, exporting to the same list
    app = make_app(redis_url, redis_url, queue)
    instrument(app)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,)))
    worker = WorkerProcess(
        "tests.integration.otel_app", env, tmp_path_factory.mktemp("otel"), concurrency=2, queues=[queue]
    )
    try:
        worker.wait_ready(app)
        yield n3, key, trace.get_tracer("n3test.web")
    finally:
        worker.stop()
        n3.close()
        provider.shutdown()  # later tests export nothing
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().uninstrument()  # nor carry trace headers
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def spans(redis_url: str, key: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(row) for row in client.lrange(key, 0, -1)]
    finally:
        client.close()


def test_one_trace_from_the_request_to_every_step(traced: tuple[Namel3ssCelery, str, Any], redis_url: str) -> None:
    n3, key, tracer = traced
    with tracer.start_as_current_span("POST /reports") as request:
        run = n3.dispatch(program(uuid.uuid4().hex))
        trace_id = f"{request.get_span_context().trace_id:032x}"
    assert run.get(timeout=WAIT).overall_status == "completed"

    def ours() -> list[dict[str, Any]]:
        return [s for s in spans(redis_url, key) if s["attributes"].get("namel3ss.run_id") == run.id]

    def complete(seen: list[dict[str, Any]]) -> bool:
        settled = {s["attributes"].get("namel3ss.node") for s in seen if s["name"] == "n3.settle"}
        return sum(s["name"] == "n3.step" for s in seen) >= 15 and settled >= {"fan", "race_node", "last"}

    deadline = time.monotonic() + WAIT
    found = ours()
    while not complete(found):  # steps: 12 + the race's 2 (the loser too) + the last; each node's settle
        assert time.monotonic() < deadline, [(s["name"], s["attributes"]) for s in found]
        time.sleep(0.2)
        found = ours()
    names = {s["name"] for s in found}
    assert {"n3.dispatch", "n3.launch", "n3.step", "n3.settle"} <= names
    assert {s["trace_id"] for s in found} == {trace_id}  # one trace: the request's
    assert len({s["pid"] for s in found}) >= 2  # this process and the worker's children
    steps = [s for s in found if s["name"] == "n3.step"]
    race = {
        s["attributes"]["namel3ss.step"]: s["attributes"]
        for s in steps
        if s["attributes"].get("namel3ss.node") == "race_node"
    }
    assert race["quick"]["namel3ss.outcome"] == "won" and race["quick"]["namel3ss.strategy"] == "race"
    assert race["slow"]["namel3ss.outcome"] in ("stopped", "cancelled")  # the loser shows how it ended
    assert all(s["attributes"].get("namel3ss.target") for s in steps)
    (dispatch,) = [s for s in found if s["name"] == "n3.dispatch"]
    assert dispatch["attributes"]["namel3ss.workflow"] == "traced"
    settles = {s["attributes"]["namel3ss.node"]: s["attributes"] for s in found if s["name"] == "n3.settle"}
    assert {node: (a["namel3ss.workflow"], a["namel3ss.block"]) for node, a in settles.items()} == {
        "fan": ("traced", "wide"),  # a node names the block it runs
        "race_node": ("traced", "fastest"),
        "last": ("traced", "last"),  # a single step is a block of its own, named as its node
    }
    assert settles["race_node"]["namel3ss.strategy"] == "race"
    assert settles["fan"]["namel3ss.outcome"] == "completed"
