"""The Celery app of the benchmark worker: ``celery -A bench.app worker -Q n3bench``.

One app holds both sides of the comparison, so both run on the same broker,
the same result backend and the same worker process:

- plain Celery: the tasks ``bench.noop`` and ``bench.collect``;
- namel3ss-celery: the step ``noop`` (the Celery task ``n3.step.noop``).

Environment (defaults in brackets):
    N3BENCH_BROKER_URL      [redis://127.0.0.1:6379/14]
    N3BENCH_RESULT_BACKEND  [redis://127.0.0.1:6379/14]
    N3BENCH_QUEUE           [n3bench]

The Redis database of these URLs belongs to the benchmark: ``bench.all_block``
flushes it before it starts.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from namel3ss_celery import Namel3ssCelery

DEFAULT_URL = "redis://127.0.0.1:6379/14"

BROKER_URL = os.environ.get("N3BENCH_BROKER_URL", DEFAULT_URL)
RESULT_BACKEND = os.environ.get("N3BENCH_RESULT_BACKEND", DEFAULT_URL)
QUEUE = os.environ.get("N3BENCH_QUEUE", "n3bench")

app = Celery("n3bench", broker=BROKER_URL, backend=RESULT_BACKEND, set_as_current=False)
app.conf.update(
    # Every task of both variants (steps, settle, chord bodies) goes to the benchmark queue.
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    # Keep namel3ss-celery's coordination keys in the benchmark database, whatever the environment says.
    namel3ss_celery={"coordination_url": RESULT_BACKEND},
)

n3 = Namel3ssCelery(app)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """Plain Celery: do nothing (the header task of the plain chord)."""


@app.task(name="bench.collect")  # type: ignore[untyped-decorator]
def collect(results: list[Any]) -> int:
    """Plain Celery: the chord body; how many header results arrived."""
    return len(results)


@n3.step("noop")
def noop_step(step: dict[str, Any], context: dict[str, Any]) -> None:
    """namel3ss-celery: do nothing (the task ``n3.step.noop``)."""
