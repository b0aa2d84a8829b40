"""A run's events in Celery's own event system: a worker started with ``-E`` sends ``n3-workflow-completed``
next to its task events, where ``celery events`` and any ``app.events.Receiver`` read them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.waiting import wait_until

from .conftest import Cluster, start_cluster, stop_cluster

pytestmark = pytest.mark.integration

WAIT = 60


class Listener:
    """An ``app.events.Receiver`` on a thread, keeping every event it receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._receiver.capture, kwargs={"limit": None}, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        # The events exchange keeps nothing for a receiver not yet bound: wait until one of ours arrives.
        probe = f"n3test-probe-{uuid.uuid4().hex[:6]}"

        def bound() -> bool:
            with self.app.events.default_dispatcher() as dispatcher:
                dispatcher.send("n3test-probe", probe=probe)
            return any(e.get("probe") == probe for e in list(self.events))

        wait_until(bound, 30, "the event receiver did not bind", every=0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.close()

    def of_type(self, kind: str, run_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("type") == kind and e.get("run_id") == run_id]


@pytest.fixture(scope="module")
def sending_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(
        redis_url, redis_url, "prefork", tmp_path_factory.mktemp("celery-events"), worker_args=["-E"]
    )
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def test_a_worker_sending_task_events_sends_the_runs_end_as_a_celery_event(sending_cluster: Cluster) -> None:
    with Listener(sending_cluster.app) as listener:
        ok = sending_cluster.n3.dispatch({"name": "fine", "steps": [{"target": "echo", "value": 1}]})
        failed = sending_cluster.n3.dispatch({"name": "broken", "steps": [{"target": "fail", "message": "no"}]})
        ok.get(timeout=WAIT)
        failed.get(timeout=WAIT)

        wait_until(
            lambda: (
                listener.of_type("n3-workflow-completed", ok.id)
                and listener.of_type("n3-workflow-completed", failed.id)
            ),
            WAIT,
            lambda: f"no n3-workflow-completed event for the runs: {[e.get('type') for e in listener.events]}",
        )
        [done] = listener.of_type("n3-workflow-completed", ok.id)
        [broken] = listener.of_type("n3-workflow-completed", failed.id)
    assert done["workflow"] == "fine" and done["status"] == "completed"
    assert done["hostname"] == sending_cluster.worker.hostname  # sent by the worker that ended the run
    assert broken["status"] == "failed" and broken["data"]["error"]
    # task events of the same steps came on the same stream
    assert any(e.get("type") == "task-succeeded" for e in listener.events)
