"""A task queue's delivery contract as Celery task options: retries with backoff, and when to acknowledge."""

from __future__ import annotations

from typing import Any

from ..errors import RoutingError
from ..spec import Reliability, RetryBackoff, TaskQueueSpec

MAX_DOUBLINGS = 64  # exponential backoff stops growing here (the cap applies long before)

HARD_LIMIT_GRACE = (
    10.0  # seconds between a step's soft time limit (it is asked to stop) and the hard one (it is killed)
)


def retry_countdown(queue: TaskQueueSpec, retries: int) -> float:
    """Seconds to wait before the next attempt, after ``retries`` retries so far (Celery's ``request.retries``).

    ``fixed`` waits ``initial_retry_delay`` every time, ``linear`` waits it
    times the attempt number, ``exponential`` doubles it each attempt; each
    is capped at ``max_retry_delay``.

    Raises:
        RoutingError: ``retries`` is negative.
    """
    if retries < 0:
        raise RoutingError(f"retries so far cannot be negative (got {retries})")
    base = queue.initial_retry_delay
    if queue.retry_backoff == RetryBackoff.FIXED:
        delay = base
    elif queue.retry_backoff == RetryBackoff.LINEAR:
        delay = base * (retries + 1)
    else:
        delay = base * float(2 ** min(retries, MAX_DOUBLINGS))
    return min(delay, queue.max_retry_delay)


def retry_policy(queue: TaskQueueSpec) -> dict[str, Any]:
    """How a step on this queue retries after it fails.

    Not Celery's publish ``retry_policy`` (that one retries sending a
    message); this one is for ``Task.retry(countdown=..., max_retries=...)``.

    Returns:
        ``{"max_retries": n, "backoff": "fixed"|"linear"|"exponential",
        "countdowns": [seconds before retry 1, ..., before retry n]}``.
    """
    return {
        "max_retries": queue.max_retries,
        "backoff": str(queue.retry_backoff),
        "countdowns": [retry_countdown(queue, retries) for retries in range(queue.max_retries)],
    }


def delivery_options(queue: TaskQueueSpec) -> dict[str, bool]:
    """Celery task options that give the queue's ``reliability``.

    ``at_most_once`` acknowledges a message when its step starts (a worker
    that dies loses it); ``at_least_once`` acknowledges it when the step has
    finished and hands it back when the worker process is lost (a step may
    then run twice).

    Returns:
        ``{"acks_late": ..., "reject_on_worker_lost": ...}``.

    Raises:
        RoutingError: ``exactly_once``, which Celery cannot give.
    """
    if queue.reliability == Reliability.AT_MOST_ONCE:
        return {"acks_late": False, "reject_on_worker_lost": False}
    if queue.reliability == Reliability.AT_LEAST_ONCE:
        return {"acks_late": True, "reject_on_worker_lost": True}
    raise RoutingError(
        f"task queue {queue.name!r} asks for reliability exactly_once, which Celery cannot give: a broker "
        f"delivers a message again when its worker dies or (on Redis) its visibility timeout passes, so a step "
        f"can run twice. Use reliability at_least_once and make the steps idempotent (running one twice with "
        f"the same run and step ids has the effect of running it once)"
    )


def seconds_text(value: float) -> str:
    """``300.0`` -> ``"300"``, ``2.5`` -> ``"2.5"``: seconds as a command line or a message shows them."""
    return str(int(value)) if float(value).is_integer() else str(value)
