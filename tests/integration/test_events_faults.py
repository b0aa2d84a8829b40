"""An emitted event whose matching worker is killed half way (the whole worker, SIGKILL), on Redis: the match
task, acknowledged only after it ran, is delivered again to the next worker once the program's visibility
timeout (5 s here) has passed, and that worker starts the triggers the first had not reached, and none twice.
Acknowledged as it started, the task would be gone with the worker, and so would those triggers' runs. The
one trigger the killed worker may have claimed without recording its run yet is lost (its claim cannot tell
a dead worker from a slow one): at most one.

The program has many triggers on one event, each starting a block of its own, so that matching the event
takes long enough (a few hundred milliseconds) for the test to kill the worker once some have started and
before all have.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from namel3ss_celery import Namel3ssCelery
from tests.waiting import wait_until

from .app import make_app
from .conftest import STEP_MODULES
from .workers import WorkerProcess, kill_with_children

pytestmark = pytest.mark.integration

TRIGGERS = 150
VISIBILITY = 5  # seconds before Redis delivers an unacknowledged message again
WAIT = 60


def program(tag: str) -> dict[str, object]:
    return {
        # The deployment's one visibility timeout, which every worker with the program takes: set on the task
        # queue of a pool (one that no step here uses).
        "worker_pools": [{"name": "other", "queue_name": "other", "auto_scaling": False}],
        "task_queues": [{"name": "other", "visibility_timeout": VISIBILITY}],
        "parallel_blocks": [{"name": f"b{i}", "steps": [{"target": "echo", "value": i}]} for i in range(TRIGGERS)],
        "event_triggers": [
            {"name": f"t{i}-{tag}", "event_type": "custom", "trigger_target": f"b{i}", "filter_fields": {"kind": tag}}
            for i in range(TRIGGERS)
        ]
        + [
            {
                "name": f"marker-{tag}",
                "event_type": "custom",
                "trigger_target": "b0",
                "filter_fields": {"kind": f"marker-{tag}"},
            }
        ],
    }


def test_a_worker_killed_while_it_matches_an_event_loses_no_trigger_and_starts_none_twice(
    redis_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "program.json"
    path.write_text(json.dumps(program(tag)))
    queue = f"n3test-match-{tag}"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
        "NAMEL3SS_CELERY_PROGRAM": str(path),
    }
    app = make_app(redis_url, redis_url, queue)
    n3 = Namel3ssCelery(app)  # no program here: the event is matched on the workers
    store = n3.events.store()
    since = store.newest()
    # prefork: the main process acknowledges a task as its pool process takes it (solo acknowledges an early-
    # acknowledged task only once it ran, as if late)
    workers = [WorkerProcess("tests.integration.app", env, tmp_path, pool="prefork", concurrency=1, queues=[queue])]

    def started(event_id: str) -> list[str]:
        """The blocks started for event ``event_id`` so far, one per run."""
        found, after = [], since
        while batch := store.read(after, count=1000):
            found += [
                e.data["workflow_name"]
                for _id, e in batch
                if e.event_type == "workflow_started" and e.data.get("trigger_event_id") == event_id
            ]
            after = batch[-1][0]
        return found

    try:
        workers[0].wait_ready(app)
        event = n3.emit("custom", {"kind": tag})
        wait_until(lambda: started(event.event_id), WAIT, lambda: f"nothing started\n{workers[0].log()}")
        kill_with_children(workers[0])  # half way through the event's triggers
        at_kill = len(started(event.event_id))
        assert at_kill < TRIGGERS, "the first worker matched every trigger before it was killed: nothing to prove"
        workers.append(
            WorkerProcess("tests.integration.app", env, tmp_path, pool="solo", concurrency=1, queues=[queue])
        )
        workers[1].wait_ready(app)
        wait_until(  # the match task, delivered again once its visibility timeout passed
            lambda: len(started(event.event_id)) >= TRIGGERS - 1,
            WAIT,
            lambda: f"{len(started(event.event_id))} of {TRIGGERS} started (killed at {at_kill})\n{workers[1].log()}",
        )
        # One task at a time on the second worker: once the marker's run has started, the match task delivered
        # again has ended, and anything it would have started twice is in the stream.
        marker = n3.emit("custom", {"kind": f"marker-{tag}"})
        wait_until(lambda: started(marker.event_id), WAIT, lambda: f"the marker started nothing\n{workers[1].log()}")
        blocks = started(event.event_id)
        assert len(blocks) == len(set(blocks)), sorted(blocks)  # none twice
        missing = {f"b{i}" for i in range(TRIGGERS)} - set(blocks)
        assert len(missing) <= 1, (at_kill, sorted(missing))  # at most the one in flight as the worker died
    finally:
        for worker in workers:
            worker.stop()  # a killed one: its log closed
        n3.close()
