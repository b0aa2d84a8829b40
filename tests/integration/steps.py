"""Steps the integration tests run on real workers (listed in NAMEL3SS_CELERY_STEP_MODULES)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from celery import current_task
from celery.signals import task_prerun

from namel3ss_celery import reducer, step
from tests.services import REDIS_URL


@step("echo")
def echo(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Returns ``value``; with ``after``, once a step tagged so has marked its start (``started_key``)."""
    if "after" in step:
        _wait_started(step["after"])
    return step.get("value")


@step("async_double")
async def async_double(step: dict[str, Any], context: dict[str, Any]) -> int:
    await asyncio.sleep(0.01)
    return int(step["value"]) * 2


@step("fail")
def fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    """Fails; with ``after``, once a step tagged so has marked its start (``started_key``)."""
    if "after" in step:
        _wait_started(step["after"])
    raise ValueError(step.get("message", "step failed on purpose"))


def _wait_started(tag: str) -> None:
    """Wait (30 s at most, then fail the step, naming the tag) until a step tagged ``tag`` has marked its start:
    a test that needs one step running before another ends says so, rather than hoping the machine starts
    them in order."""
    client, deadline = _redis(), time.monotonic() + 30
    try:
        while not client.exists(started_key(tag)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no step tagged {tag!r} marked its start within 30 s")
            time.sleep(0.01)
    finally:
        client.close()


@step("async_fail")
async def async_fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    await asyncio.sleep(0.01)
    raise KeyError("missing on purpose")


@step("context_value")
def context_value(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return context.get(step["key"])


@step("whoami")
def whoami(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    task = current_task._get_current_object()
    request = task.request
    return {
        "task_classes": [cls.__name__ for cls in type(task).__mro__],
        "task_name": task.name,
        "hostname": request.hostname,
        "queue": (request.delivery_info or {}).get("routing_key"),
        "pid": os.getpid(),
    }


@step("not_json")
def not_json(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return {"when": object()}


@step("sleep")
def sleep(step: dict[str, Any], context: dict[str, Any]) -> float:
    time.sleep(float(step["seconds"]))
    return float(step["seconds"])


@reducer("product")
def product(results: list[int]) -> int:
    out = 1
    for value in results:
        out *= value
    return out


def add_one(step: dict[str, Any], context: dict[str, Any]) -> int:
    """A plain module-level function: target ``tests.integration.steps:add_one``."""
    return int(step["value"]) + 1


# --- steps for block control (race, deadlines, concurrency, retries) ---------------


def _redis() -> Any:
    """The result backend's Redis (N3_TEST_BACKEND); else the tests' database (tests/services.py)."""
    import redis

    return redis.Redis.from_url(os.environ.get("N3_TEST_BACKEND", REDIS_URL))


PEAK_SCRIPT = (
    "local m = redis.call('GET', KEYS[1]); "
    "if (not m) or tonumber(m) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end"
)


MARKER_TTL = 3600  # seconds the start markers and gates of a test stay in Redis


def started_key(tag: str) -> str:
    """The Redis list a step with ``tag`` pushes its process id onto as it starts."""
    return f"n3test:{tag}:started"


def stalled_key(tag: str) -> str:
    """The Redis list a step with ``stall_before_start`` and ``tag`` pushes its process id onto as it stalls."""
    return f"n3test:{tag}:stalled"


@task_prerun.connect(weak=False)
def _stall_before_start(task: Any = None, args: Any = None, **_: Any) -> None:
    """A step whose payload has ``stall_before_start`` (seconds) stalls in its pool process after Celery took it
    (and, under default delivery, acknowledged its message) and before its start guard: a test kills its worker
    in that moment."""
    message = args[0] if task is not None and task.name.startswith("n3.step.") and args else None
    step = message.get("step") if isinstance(message, dict) else None
    if not isinstance(step, dict) or "stall_before_start" not in step:
        return
    _push_pid(stalled_key(step["tag"]))
    time.sleep(float(step["stall_before_start"]))


def gate_key(gate: str) -> str:
    """The Redis key a ``gated`` step waits for; the test sets it to let the step finish."""
    return f"n3test:{gate}:open"


def _mark_started(step: dict[str, Any]) -> None:
    if "tag" in step:
        _push_pid(started_key(step["tag"]))


def _push_pid(key: str) -> None:
    """Push this process's id onto the Redis list ``key`` (a marker a test waits for)."""
    client = _redis()
    try:
        client.rpush(key, os.getpid())
        client.expire(key, MARKER_TTL)
    finally:
        client.close()


@step("patient")
def patient(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Sleeps ``seconds`` in small slices, stopping when asked (``cancelled()``); returns ``value``.

    With ``tag``, it first marks its start (``started_key(tag)``); with ``after``, it then waits for a step
    tagged so to have marked its own, and only then starts its sleep.
    """
    from namel3ss_celery import StepCancelled, cancelled

    _mark_started(step)
    if "after" in step:
        _wait_started(step["after"])
    deadline = time.monotonic() + float(step["seconds"])
    while time.monotonic() < deadline:
        if cancelled():
            raise StepCancelled("asked to stop")
        time.sleep(0.01)
    if step.get("fail"):
        raise RuntimeError(f"failed after {step['seconds']}s")
    return step.get("value")


@step("async_patient")
async def async_patient(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Sleeps ``seconds`` with asyncio (the runner cancels it when its block is decided); with ``tag``, it
    first marks its start (``started_key(tag)``)."""
    _mark_started(step)
    await asyncio.sleep(float(step["seconds"]))
    return step.get("value")


@step("stubborn")
def stubborn(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Sleeps ``seconds`` and never checks whether it should stop; with ``tag``, marks its start first."""
    _mark_started(step)
    time.sleep(float(step["seconds"]))
    return step.get("value")


@step("gated")
def gated(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Runs until the test opens the gate ``gate`` (``gate_key``), then returns ``value``.

    It stops when asked (``cancelled()``), and fails after ``seconds`` (60 by default) with the gate
    still shut, so a test that never opens it cannot hold a worker for ever.
    """
    from namel3ss_celery import StepCancelled, cancelled

    _mark_started(step)
    limit = float(step.get("seconds", 60))
    deadline = time.monotonic() + limit
    client = _redis()
    try:
        while not client.exists(gate_key(step["gate"])):
            if cancelled():
                raise StepCancelled("asked to stop")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {step['gate']} still shut after {limit:g}s")
            time.sleep(0.01)
    finally:
        client.close()
    return step.get("value")


@step("measured")
def measured(step: dict[str, Any], context: dict[str, Any]) -> float:
    """Counts itself as running for ``seconds`` and records the peak under ``tag``."""
    client = _redis()
    running, peak = f"n3test:{step['tag']}:running", f"n3test:{step['tag']}:peak"
    try:
        now = client.incr(running)
        client.eval(PEAK_SCRIPT, 1, peak, now)
        time.sleep(float(step["seconds"]))
        return float(step["seconds"])
    finally:
        client.decr(running)
        client.close()


@step("flaky")
def flaky(step: dict[str, Any], context: dict[str, Any]) -> int:
    """Fails its first ``failures`` calls (counted under ``tag``), then returns how many calls it took."""
    client = _redis()
    try:
        calls = int(client.incr(f"n3test:{step['tag']}:calls"))
    finally:
        client.close()
    if calls <= int(step["failures"]):
        raise ConnectionError(f"flaky call {calls}")
    return calls


@step("fanned")
def fanned(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """A fan-out step: its item, or its batch of items."""
    return step["items"] if "items" in step else step["item"]


async def runtime_task(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """A Namel3ss-style step executor: a module-level function, sent to workers as module:function."""
    await asyncio.sleep(0.01)
    if step.get("fail"):
        raise ValueError(f"task {step.get('task')} failed")
    return {"task": step.get("task"), "pid": os.getpid()}


async def runtime_value(step: Any, context: dict[str, Any]) -> str:
    """A Namel3ss step executor that takes any JSON value as its step (a string, a number, ...)."""
    return f"{type(step).__name__} {step} on {os.getpid()}"


@step("log_ids")
def log_ids(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Logs one line and returns the run, block and step ids its log record carried."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.integration.steps")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("hello from a step")
    finally:
        logger.removeHandler(handler)
    record = records[0]
    return {"run": record.n3_run, "block": record.n3_block, "step": record.n3_step}  # type: ignore[attr-defined]


@step("timed_flaky")
def timed_flaky(step: dict[str, Any], context: dict[str, Any]) -> int:
    """Records the time of each call under ``tag``; fails the first ``failures`` calls."""
    client = _redis()
    try:
        client.rpush(f"n3test:{step['tag']}:times", time.time())
        calls = int(client.llen(f"n3test:{step['tag']}:times"))
    finally:
        client.close()
    if calls <= int(step["failures"]):
        raise ConnectionError(f"timed_flaky call {calls}")
    return calls


@step("slow_first_time")
def slow_first_time(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``seconds`` on its first delivery (long enough to kill its worker), returns at once after."""
    client = _redis()
    try:
        delivery = int(client.incr(f"n3test:{step['tag']}:deliveries"))
    finally:
        client.close()
    if delivery == 1:
        time.sleep(float(step["seconds"]))
    task = current_task._get_current_object()
    return {"delivery": delivery, "acks_late": bool(task.acks_late)}


@step("die")
def die(step: dict[str, Any], context: dict[str, Any]) -> None:
    """Kills its own worker process: the step never files an outcome."""
    os._exit(1)
