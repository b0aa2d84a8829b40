"""The Celery app and steps of the chaos soak: ``celery -A bench.soak_steps worker``.

Everything (broker, result backend, coordination store) is the soak's private
Redis, named by ``N3SOAK_REDIS_URL``; without it this module defines the steps
and ``make_app`` only (``bench.soak`` builds its app once the port is known).

Two steps, both sleeping what the dispatcher chose (a few ms to a few hundred
ms), returning ``step["value"]`` or raising ``PlannedFailure`` when told to:

- ``nap``: sync, sleeps in 10 ms slices and stops when ``cancelled()`` says so;
- ``nap_async``: ``await asyncio.sleep`` (the runner cancels it).

``step["fail"]`` is ``"always"`` (every attempt fails) or ``"first"`` (only the
first attempt fails, for blocks with ``retry_failed``). Each call counts itself
in Redis under the step's ``token`` and attempt: ``soak:start:<token>:<attempt>``
when the body starts, ``soak:end:<token>:<attempt>`` when it returns or raises
on its own (not when it is stopped or its process is killed). Both keys expire
with the run records (``EXPIRES``).

Environment:
    N3SOAK_REDIS_URL  the private Redis (``redis://127.0.0.1:<port>/0``)
    N3SOAK_QUEUE      [soak] the one queue every task goes to
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, current_task

from namel3ss_celery import Namel3ssCelery, StepCancelled, cancelled, step

QUEUE = os.environ.get("N3SOAK_QUEUE", "soak")
EXPIRES = 3600  # seconds: run records, results and the probes below
PROBE_PATIENCE = 15.0  # seconds a probe keeps trying while the private Redis restarts
START_KEY = "soak:start:{token}:{attempt}"
END_KEY = "soak:end:{token}:{attempt}"


class PlannedFailure(Exception):
    """The failure a step was told to have."""


def make_app(url: str, queue: str = QUEUE) -> Celery:
    """The soak's app: broker, result backend and coordination store all on ``url``, one queue."""
    app = Celery("n3soak", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=EXPIRES,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # ride out every restart of the private Redis
        namel3ss_celery={"coordination_url": url},
    )
    return app


# --- probes: how many times each step body ran -------------------------------------

_clients: dict[int, redis.Redis[str]] = {}


def _probe_client() -> redis.Redis[str]:
    """This process's client of the private Redis (one per process: prefork forks)."""
    client = _clients.get(os.getpid())
    if client is None:
        url = os.environ["N3SOAK_REDIS_URL"]
        client = _clients[os.getpid()] = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    return client


def _count(key: str) -> None:
    """INCR ``key`` and set its expiry in one transaction; retry while the private Redis restarts."""
    deadline = time.monotonic() + PROBE_PATIENCE
    while True:
        try:
            with _probe_client().pipeline(transaction=True) as pipe:
                pipe.incr(key).expire(key, EXPIRES).execute()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _attempt() -> int:
    """The Celery attempt of the running step (``request.retries``)."""
    task = current_task._get_current_object() if current_task else None
    return int(getattr(task.request, "retries", 0) or 0) if task is not None else 0


def _finish(payload: dict[str, Any], attempt: int) -> int:
    """Count the body's end; raise ``PlannedFailure`` when this attempt must fail, else return the value."""
    _count(END_KEY.format(token=payload["token"], attempt=attempt))
    fail = payload.get("fail")
    if fail == "always" or (fail == "first" and attempt == 0):
        raise PlannedFailure(f"planned failure ({fail})")
    return int(payload["value"])


def _sliced_sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep in 10 ms slices; raise ``StepCancelled`` as soon as ``stop()`` says so."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop():
            raise StepCancelled("stopped: cancelled() said so")
        time.sleep(min(0.01, left))


@step("nap")
def nap(payload: dict[str, Any], context: dict[str, Any]) -> int:
    """Sleep ``seconds`` (asking ``cancelled()`` every 10 ms), then return ``value`` or fail as planned."""
    attempt = _attempt()
    _count(START_KEY.format(token=payload["token"], attempt=attempt))
    _sliced_sleep(float(payload["seconds"]), cancelled)
    return _finish(payload, attempt)


@step("nap_async")
async def nap_async(payload: dict[str, Any], context: dict[str, Any]) -> int:
    """``await asyncio.sleep(seconds)``, then return ``value`` or fail as planned."""
    attempt = _attempt()
    _count(START_KEY.format(token=payload["token"], attempt=attempt))
    await asyncio.sleep(float(payload["seconds"]))
    return _finish(payload, attempt)


if "N3SOAK_REDIS_URL" in os.environ:
    app = make_app(os.environ["N3SOAK_REDIS_URL"])
    n3 = Namel3ssCelery(app)
