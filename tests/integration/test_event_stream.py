"""The event stream over WebSocket (``namel3ss-celery events --serve``), in order, resumed after a reconnect
without a gap; the CLI's JSON lines; a run's own events; the run view the same server draws; and its
refusal to listen beyond this machine without a token."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import quote

import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from namel3ss_celery.events.server import COOKIE
from tests.waiting import wait_until

from .conftest import Cluster
from .steps import MARKER_TTL, gate_key
from .workers import CLI, REPO, EventsServer

pytestmark = pytest.mark.integration


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[str]:
    running = EventsServer("--broker", redis_url)
    try:
        yield f"ws://127.0.0.1:{running.port}/events"
    finally:
        running.stop()


def receive(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=30)) for _ in range(count)]


def test_a_client_gets_events_in_order_and_resumes_without_a_gap(redis_cluster: Cluster, server: str) -> None:
    n3 = redis_cluster.n3
    source = f"stream-{uuid.uuid4().hex[:8]}"
    with connect(f"{server}?event_type=custom") as ws:
        assert json.loads(ws.recv(timeout=30))["ready"]  # events after this point reach this client
        sent = [n3.emit("custom", {"n": n}, source=source).event_id for n in range(3)]
        first = [m for m in receive(ws, 3) if m["event"]["source"] == source]
    assert [m["event"]["event_id"] for m in first] == sent
    last_seen = first[0]["id"]  # a client that saw only the first one reconnects
    sent += [n3.emit("custom", {"n": n}, source=source).event_id for n in range(3, 5)]
    with connect(f"{server}?event_type=custom&after={last_seen}") as ws:
        assert json.loads(ws.recv(timeout=30)) == {"ready": True, "after": last_seen}
        resumed = [m for m in receive(ws, 4) if m["event"]["source"] == source]
    assert [m["event"]["event_id"] for m in resumed] == sent[1:]  # 2..5: nothing lost, nothing twice


def test_a_runs_own_events_by_run_id(redis_cluster: Cluster, server: str) -> None:
    n3 = redis_cluster.n3
    name = f"watched-{uuid.uuid4().hex[:8]}"
    with connect(f"{server}?workflow={name}") as ws:
        assert json.loads(ws.recv(timeout=30))["ready"]
        run = n3.dispatch({"name": name, "steps": [{"target": "echo", "value": 1}]})
        messages = receive(ws, 2)
    assert [m["event"]["event_type"] for m in messages] == ["workflow_started", "workflow_completed"]
    assert {m["event"]["data"]["instance_id"] for m in messages} == {run.id}
    assert messages[1]["event"]["data"]["status"] == "completed"


def test_the_cli_prints_events_as_json_lines(redis_cluster: Cluster, redis_url: str) -> None:
    n3 = redis_cluster.n3
    source = f"lines-{uuid.uuid4().hex[:8]}"
    newest = n3.events.store().newest()
    ids = [n3.emit("manual", {"n": n}, source=source).event_id for n in range(2)]
    out = subprocess.run(
        [CLI, "events", "--broker", redis_url, "--after", newest, "--event-type", "manual", "--limit", "2"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["event"]["event_id"] for line in out.stdout.splitlines()] == ids


def test_the_server_needs_a_token_beyond_this_machine(redis_url: str) -> None:
    out = subprocess.run(
        [CLI, "events", "--serve", "--host", "0.0.0.0", "--broker", redis_url],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "beyond this machine, with no token: give --token" in out.stderr


class Marks(HTMLParser):
    """Every element's data-* attributes, as tests and tooling read the run view."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, str] = {}
        self.steps: dict[str, dict[str, str | None]] = {}
        self.runs: set[str] = set()
        self.errors: dict[str, str] = {}  # each step's error, as the page shows it
        self.durations: dict[str, str] = {}  # each recent run's duration, in milliseconds
        self._step: str | None = None
        self._row = ""
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-node" in found:
            self.nodes[str(found["data-node"])] = str(found["data-status"])
        if "data-step" in found:
            self.steps[str(found["data-step"])] = {"status": found["data-status"], "outcome": found.get("data-outcome")}
            self._step = str(found["data-step"])
        if "data-run" in found and tag == "tr":
            self.runs.add(str(found["data-run"]))
            self._row = str(found["data-run"])
        if tag == "td" and found.get("class") == "duration" and found.get("data-duration-ms") is not None:
            self.durations[self._row] = str(found["data-duration-ms"])
        self._in_error = self._step is not None and tag == "div" and found.get("class") == "error"

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._step = None
        self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error and self._step is not None:
            self.errors[self._step] = self.errors.get(self._step, "") + data


def view(server: str, path: str, opener: urllib.request.OpenerDirector | None = None) -> Marks:
    url = server.replace("ws://", "http://").removesuffix("/events") + path
    with (opener or urllib.request.build_opener()).open(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        marks = Marks()
        marks.feed(response.read().decode())
        return marks


def test_the_run_view_draws_a_run_while_it_goes_on_and_after(redis_cluster: Cluster, server: str) -> None:
    n3 = redis_cluster.n3
    gate = uuid.uuid4().hex
    program = {
        "parallel_blocks": [
            {
                "name": "quick",
                "strategy": "race",
                "steps": [
                    {"name": "slow", "target": "patient", "seconds": 20, "tag": gate},
                    {"name": "fast", "target": "echo", "value": 1, "after": gate},  # once slow runs
                ],
            },
            {"name": "held", "steps": [{"name": "door", "target": "gated", "gate": gate, "seconds": 60}]},
        ],
        "workflows": [
            {
                "name": f"viewed-{gate[:6]}",
                "steps": [
                    {"name": "first", "block": "quick"},
                    {"name": "second", "block": "held", "depends_on": ["first"]},
                ],
            }
        ],
    }
    run = n3.dispatch(program)
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    try:
        wait_until(
            lambda: view(server, f"/runs/{run.id}").nodes.get("second") == "running", 30, "the second node to run"
        )
        marks = view(server, f"/runs/{run.id}")
        assert marks.nodes == {"first": "completed", "second": "running"}
        assert marks.steps["fast"] == {"status": "completed", "outcome": "won"}
        assert marks.steps["slow"]["outcome"] in ("stopped", "stopping")  # the loser, stopped or on its way
        assert marks.steps["door"]["status"] in ("pending", "running")
        client.set(gate_key(gate), 1, ex=MARKER_TTL)
        assert run.get(timeout=30).overall_status == "completed"
        assert view(server, f"/runs/{run.id}").nodes == {"first": "completed", "second": "completed"}
        listed = view(server, "/")
        assert run.id in listed.runs  # the list of recent runs shows it, with how long it took
        assert float(listed.durations[run.id]) > 0
    finally:
        client.set(gate_key(gate), 1, ex=MARKER_TTL)
        client.close()
    with pytest.raises(urllib.error.HTTPError) as missing:
        view(server, "/runs/no-such-run")
    missing.value.close()
    assert missing.value.code == 404


def test_the_run_view_shows_a_failed_steps_error(redis_cluster: Cluster, server: str) -> None:
    block = {
        "name": f"broken-{uuid.uuid4().hex[:6]}",
        "strategy": "collect",
        "steps": [{"name": "bad", "target": "fail", "message": "the feed is down"}, {"name": "good", "target": "echo"}],
    }
    run = redis_cluster.n3.dispatch(block)
    assert run.get(timeout=30).overall_status == "completed"  # collect: one step failed, the block completed
    marks = view(server, f"/runs/{run.id}")
    assert marks.steps["bad"]["status"] == "failed"
    assert "the feed is down" in marks.errors["bad"]
    assert "good" not in marks.errors


TOKEN = "a token for the run view"


def links(url: str, opener: urllib.request.OpenerDirector) -> list[str]:
    """The ``href`` of every link of the page at ``url``."""

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            href = dict(attrs).get("href")
            if tag == "a" and href:
                self.found.append(href)

    with opener.open(url, timeout=10) as response:
        parser = Links()
        parser.feed(response.read().decode())
        return parser.found


def test_behind_a_token_the_run_views_links_and_its_websocket_work(redis_cluster: Cluster, redis_url: str) -> None:
    """As deployed (0.0.0.0 and a token): refused without the token; a browser that opened a page with
    ``?token=`` once follows the links and opens the stream with the cookie that page set."""
    name = f"guarded-{uuid.uuid4().hex[:6]}"
    run = redis_cluster.n3.dispatch({"name": name, "steps": [{"target": "echo"}]})
    assert run.get(timeout=30).overall_status == "completed"
    running = EventsServer("--broker", redis_url, "--host", "0.0.0.0", "--token", TOKEN)
    try:
        plain = urllib.request.build_opener()
        for path in ("/", f"/runs/{run.id}"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                view(running.url, path, plain)
            refused.value.close()
            assert refused.value.code == 401
        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        assert run.id in view(running.url, f"/?token={quote(TOKEN)}", browser).runs
        (kept,) = jar  # the page set its cookie
        assert kept.name == COOKIE and kept.has_nonstandard_attr("HttpOnly") and TOKEN not in str(kept.value)
        assert f"/runs/{run.id}" in links(running.url + "/", browser)  # no token in it
        assert "/" in links(running.url + f"/runs/{run.id}", browser)  # "recent runs"
        assert view(running.url, f"/runs/{run.id}", browser).nodes == {name: "completed"}
        assert run.id in view(running.url, "/", browser).runs
        with connect(
            f"ws://127.0.0.1:{running.port}/events?run_id={run.id}",
            additional_headers={"Cookie": f"{kept.name}={kept.value}"},  # as the page's WebSocket sends it
            open_timeout=10,
        ) as ws:
            assert json.loads(ws.recv(timeout=30))["ready"]
        with pytest.raises(InvalidStatus) as refused_stream:
            connect(f"ws://127.0.0.1:{running.port}/events", open_timeout=10)
        assert refused_stream.value.response.status_code == 401
    finally:
        running.stop()


def test_insecure_serves_beyond_this_machine_without_a_token(redis_cluster: Cluster, redis_url: str) -> None:
    run = redis_cluster.n3.dispatch({"name": f"open-{uuid.uuid4().hex[:6]}", "steps": [{"target": "echo"}]})
    assert run.get(timeout=30).overall_status == "completed"
    running = EventsServer("--broker", redis_url, "--host", "0.0.0.0", "--insecure")
    try:
        assert run.id in view(running.url, "/").runs
        assert view(running.url, f"/runs/{run.id}").nodes
        with connect(f"ws://127.0.0.1:{running.port}/events", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=30))["ready"]
    finally:
        running.stop()


def test_redis_takes_an_event_announced_again_once(redis_url: str) -> None:
    from namel3ss_celery.events import lifecycle
    from namel3ss_celery.events.model import Event, EventType
    from namel3ss_celery.events.stream import ONCE_PREFIX, RedisEventStore

    store = RedisEventStore(redis_url)
    run_id = uuid.uuid4().hex
    event = Event.new(
        EventType.WORKFLOW_COMPLETED,
        lifecycle.SOURCE,
        {"instance_id": run_id},
        metadata={lifecycle.ONCE: True},
        event_id=lifecycle.ended_event_id(run_id),
    )
    try:
        before = store.newest()
        first = store.append_once(event)
        assert first is not None and store.append_once(event) is None
        mine = [e for _i, e in store.read(before, count=10_000) if e.event_id == event.event_id]
        assert len(mine) == 1
        assert 0 < store.client.ttl(ONCE_PREFIX + event.event_id) <= 3600
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_event_is_appended_with_its_claims_each_won_once(kind: str, redis_url: str) -> None:
    from namel3ss_celery.events.model import Event, EventType
    from namel3ss_celery.events.stream import MemoryEventStore, RedisEventStore

    store = MemoryEventStore() if kind == "memory" else RedisEventStore(redis_url)
    tag = uuid.uuid4().hex
    claims = [(f"dedupe:a:{tag}", 60.0), (f"dedupe:b:{tag}", 60.0)]
    try:
        before = store.newest()
        first = Event.new(EventType.CUSTOM, "test", {"n": 1})
        stream_id, won = store.append_claiming(first, claims)
        assert won == [True, True]
        assert store.append_claiming(Event.new(EventType.CUSTOM, "test", {"n": 2}), claims[1:])[1] == [False]
        assert [(i, e.event_id) for i, e in store.read(before, count=10_000)][0] == (stream_id, first.event_id)
        assert not store.claim(claims[0][0], 60)  # the same window as claim's
    finally:
        store.close()
