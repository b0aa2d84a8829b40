"""The event stream over WebSocket (``namel3ss-celery events --serve``), in order, resumed after a reconnect
without a gap; the CLI's JSON lines; a run's own events; and the server's refusal to listen beyond this
machine without a token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.waiting import wait_until

from .conftest import Cluster
from .workers import CLI, REPO

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [CLI, "events", "--serve", "--port", str(port), "--broker", redis_url],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def listening() -> bool:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 30, "the events server to listen")
        yield f"ws://127.0.0.1:{port}/events"
    finally:
        process.terminate()
        process.communicate(timeout=10)


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
