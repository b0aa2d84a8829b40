"""The Celery app of the benchmark worker: ``celery -A bench.app worker -Q n3bench``.

One app holds both sides of the comparison, so both run on the same broker,
the same result backend and the same worker process:

- plain Celery: the tasks ``bench.noop`` and ``bench.collect`` (``all_block``),
  ``bench.sleep`` (``race``) and ``bench.tracked_sleep`` (``max_concurrency``);
- namel3ss-celery: the step ``noop`` (the Celery task ``n3.step.noop``), the
  steps ``sleep_async``, ``sleep_check``, ``sleep_nocheck`` and ``tracked_sleep``.

The sleeping tasks and steps record what they did in the benchmark's Redis
database (``probe``: start, end and pid of one call; ``counter``: how many
calls of one block run at once, and the peak), so both sides are measured the
same way, from inside the worker.

Environment (defaults in brackets):
    N3BENCH_BROKER_URL      [database 14 of the tests' Redis server: redis://127.0.0.1:6379/14]
    N3BENCH_RESULT_BACKEND  [the same]
    N3BENCH_QUEUE           [n3bench]

The default comes from tests/services.py (``BENCH_REDIS_URL``): the server of
``N3_TEST_REDIS_URL``, database ``BENCH_REDIS_DB``.

The Redis database of these URLs belongs to the benchmark: ``bench.all_block``
flushes it before it starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import redis
from celery import Celery

from namel3ss_celery import Namel3ssCelery, StepCancelled, cancelled
from tests.services import BENCH_REDIS_URL

DEFAULT_URL = BENCH_REDIS_URL

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
def noop(index: int | None = None) -> None:
    """Plain Celery: do nothing (the header task of the plain chord); ``index`` tells the calls apart."""


@app.task(name="bench.collect")  # type: ignore[untyped-decorator]
def collect(results: list[Any]) -> int:
    """Plain Celery: the chord body; how many header results arrived."""
    return len(results)


@n3.step("noop")
def noop_step(step: dict[str, Any], context: dict[str, Any]) -> None:
    """namel3ss-celery: do nothing (the task ``n3.step.noop``)."""


# --- what the sleeping tasks and steps record in Redis ----------------------------

_clients: dict[int, redis.Redis[str]] = {}

PEAK_SCRIPT = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


def probe_client() -> redis.Redis[str]:
    """This process's Redis client on the result backend's database (one per process: prefork forks)."""
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(RESULT_BACKEND, decode_responses=True)
    return client


@contextmanager
def recorded(probe: str | None) -> Iterator[None]:
    """Record ``start``, ``pid`` and ``end`` of the body in the hash ``probe``; ``end`` also when SIGTERM kills it.

    The SIGTERM handler (prefork children only: a thread cannot set one) writes
    ``end`` and ``killed``, then dies of SIGTERM as the process would have.
    """
    if not probe:
        yield
        return
    client = probe_client()
    client.hset(probe, mapping={"start": repr(time.time()), "pid": os.getpid()})
    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            client.hset(probe, mapping={"end": repr(time.time()), "killed": "1"})
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        client.hset(probe, "end", repr(time.time()))
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def counted(counter: str) -> Iterator[None]:
    """INCR ``counter`` (and raise ``<counter>:peak`` to it) for the body's duration, DECR after."""
    client = probe_client()
    client.eval(PEAK_SCRIPT, 2, counter, f"{counter}:peak")  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        client.decr(counter)


def sliced_sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep in 10 ms slices; raise ``StepCancelled`` as soon as ``stop()`` says so."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop():
            raise StepCancelled("stopped: cancelled() said so")
        time.sleep(min(0.01, left))


# --- race: the same sleeps as plain tasks and as namel3ss steps ----------------------


@app.task(name="bench.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float, kind: str, probe: str) -> float:
    """Plain Celery: sleep like the step of that kind (``async``, ``check``, ``nocheck``).

    A plain task has nothing to check: ``check`` sleeps in the same 10 ms slices and never stops early.
    """
    with recorded(probe):
        if kind == "async":
            asyncio.run(asyncio.sleep(seconds))
        elif kind == "check":
            sliced_sleep(seconds, lambda: False)
        else:
            time.sleep(seconds)
    return seconds


@n3.step("sleep_async")
async def sleep_async(step: dict[str, Any], context: dict[str, Any]) -> float:
    """namel3ss-celery: ``await asyncio.sleep``; the runner cancels it when the block no longer needs it."""
    with recorded(step.get("probe")):
        await asyncio.sleep(step["seconds"])
    return float(step["seconds"])


@n3.step("sleep_check")
def sleep_check(step: dict[str, Any], context: dict[str, Any]) -> float:
    """namel3ss-celery: sleep in 10 ms slices, asking ``cancelled()`` before each."""
    with recorded(step.get("probe")):
        sliced_sleep(step["seconds"], cancelled)
    return float(step["seconds"])


@n3.step("sleep_nocheck")
def sleep_nocheck(step: dict[str, Any], context: dict[str, Any]) -> float:
    """namel3ss-celery: one ``time.sleep``, deaf to the block (only ``terminate_losers`` stops it)."""
    with recorded(step.get("probe")):
        time.sleep(step["seconds"])
    return float(step["seconds"])


# --- max_concurrency: sleeps that count how many of their block run at once ----------


@app.task(name="bench.tracked_sleep")  # type: ignore[untyped-decorator]
def tracked_sleep(seconds: float, counter: str) -> float:
    """Plain Celery: sleep ``seconds`` inside ``counted(counter)``."""
    with counted(counter):
        time.sleep(seconds)
    return seconds


@n3.step("tracked_sleep")
def tracked_sleep_step(step: dict[str, Any], context: dict[str, Any]) -> float:
    """namel3ss-celery: sleep ``step["seconds"]`` inside ``counted(step["counter"])``."""
    with counted(step["counter"]):
        time.sleep(step["seconds"])
    return float(step["seconds"])


# --- events: when a triggered run's first step (or a plain task) starts --------------


@app.task(name="bench.mark_start")  # type: ignore[untyped-decorator]
def mark_start(probe: str) -> None:
    """Plain Celery: push the time this task started onto the list ``probe``."""
    probe_client().rpush(probe, repr(time.time()))


@n3.step("mark_start")
def mark_start_step(step: dict[str, Any], context: dict[str, Any]) -> None:
    """namel3ss-celery: push the time this step started onto the list the triggering event names."""
    probe_client().rpush(context["probe"], repr(time.time()))
