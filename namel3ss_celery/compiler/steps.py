"""Step signatures: one ``n3.step.<target>`` message per step, carrying the schema-versioned payload."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from celery import canvas

from ..errors import CompileError
from ..registry import STEP_TASK_PREFIX
from ..routing.distribution import STICKY_KEY_FIELD
from ..routing.queues import broker_priority
from ..spec import ParallelBlockSpec, step_key
from ..worker.plan import PoolRoute
from ..worker.runner import SCHEMA_VERSION


def step_payload(
    block: ParallelBlockSpec,
    index: int,
    run_id: str,
    node: str,
    context: dict[str, Any],
    join: str,
    feed: bool,
    deadline: float | None = None,
    pools: Mapping[str, PoolRoute] | None = None,
) -> dict[str, Any]:
    """The message body a step task receives (schema version ``SCHEMA_VERSION``).

    Besides the step and its context it carries what the worker needs to settle
    without reading the plan: the block's strategy, ``fail_fast``, how many
    retries a failure gets, whether a finished step publishes the next one
    (``feed``, under ``max_concurrency``), and the block's absolute ``deadline``.
    A step routed to a pool (``pools``) also carries its task queue's retry
    delays, its dead-letter queue and, under at_least_once, how many
    deliveries it may take.

    Raises:
        CompileError: the message is larger than its task queue's ``max_message_size``.
    """
    step = block.steps[index]
    payload = {
        "v": SCHEMA_VERSION,
        "run": run_id,
        "node": node,
        "i": index,
        "n": len(block.steps),
        "key": step_key(step, index),
        "join": join,
        "strategy": str(block.strategy),
        "fail_fast": block.fail_fast,
        "retries": block.max_retries if block.retry_failed else 0,
        "feed": feed,
        "deadline": deadline,
        "step": step.payload(),
        "context": context,
    }
    route = (pools or {}).get(step.worker_pool) if step.worker_pool else None
    if route is None:
        return payload
    if route.countdowns is not None:
        payload["retries"] = len(route.countdowns)
        payload["countdowns"] = list(route.countdowns)
    if route.fail_fast:
        payload["retries"] = 0  # no retry, remote or local
    if route.dead_letter:
        payload["dlq"] = route.dead_letter  # where it goes when it has failed for good
    if route.sticky:  # the worker that first takes a key keeps it (worker side: conductor.place_sticky)
        key = step.payload().get(STICKY_KEY_FIELD) or step.target
        payload["sticky"] = {"pool": step.worker_pool, "key": str(key)}
    if route.retry_local:
        payload["retry_local"] = True
    if route.max_wait is not None:
        payload["max_wait"] = route.max_wait
        payload["max_wait_field"] = route.max_wait_field
    if route.at_least_once:
        payload["deliveries"] = len(route.countdowns or ()) + 1  # a poison step cannot come back forever
    if route.max_message_size is not None:
        size = len(json.dumps(payload).encode())
        if size > route.max_message_size:
            raise CompileError(
                f"step {payload['key']!r} makes a {size}-byte message, over the max_message_size "
                f"({route.max_message_size}) of queue {route.queue!r}",
                path=f"{node}.steps[{index}]",
            )
    return payload


HARD_LIMIT_GRACE = 5.0  # seconds between a step's soft and hard time limits


def step_signature(
    app: Any, target: str, payload: dict[str, Any], expires_at: float | None, queue: str | None = None
) -> canvas.Signature:
    """One immutable signature; a block deadline makes its message expire, so it never starts late.

    ``queue`` is the queue of the step's worker pool; without one, the app's own routes decide.
    """
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if payload["step"].get("priority") is not None:
        options["priority"] = message_priority(app, int(payload["step"]["priority"]))
    if expires_at is not None:
        options["expires"] = datetime.fromtimestamp(expires_at, tz=timezone.utc)
    limit = payload["step"].get("timeout_seconds")
    if limit:
        # Celery's time limits (prefork): a soft one the step sees as a timeout, a hard one that kills it.
        options["soft_time_limit"] = limit
        options["time_limit"] = limit + HARD_LIMIT_GRACE
    # A short argsrepr: what Flower and worker logs show, without Celery repr()-ing the whole payload.
    options["argsrepr"] = f"(step {payload['key']!r} of block {payload['node']!r}, run {payload['run']})"
    return app.signature(STEP_TASK_PREFIX + target, args=(payload,), immutable=True, **options)


def step_signatures(
    app: Any,
    block: ParallelBlockSpec,
    run_id: str,
    node: str,
    context: dict[str, Any],
    join: str,
    expires_at: float | None = None,
    indexes: Sequence[int] | None = None,
    feed: bool = False,
    pools: Mapping[str, PoolRoute] | None = None,
) -> list[canvas.Signature]:
    """The signatures of the steps at ``indexes`` (all by default), named after their targets."""
    now = time.time()
    return [
        step_signature(
            app,
            str(block.steps[i].target),
            payload,
            message_expiry(payload, now),
            pool_queue(block.steps[i].worker_pool, pools),
        )
        for i in (indexes if indexes is not None else range(len(block.steps)))
        for payload in [step_payload(block, i, run_id, node, context, join, feed, expires_at, pools)]
    ]


def message_expiry(payload: dict[str, Any], queued_at: float) -> float | None:
    """When the message of a step queued at ``queued_at`` expires: at its block's deadline, or sooner by the
    wait it allows (``max_wait``: its pool's ``max_wait_seconds`` or its task queue's ``message_retention``)."""
    deadline = payload.get("deadline")
    if payload.get("max_wait") is None:
        return deadline
    limit = queued_at + float(payload["max_wait"])
    return min(float(deadline), limit) if deadline is not None else limit


def pool_queue(pool: str | None, pools: Mapping[str, PoolRoute] | None) -> str | None:
    """The queue of a step's worker pool (``check_plan`` made sure the pool exists)."""
    return (pools or {})[pool].queue if pool else None


def adapter_queue(block: ParallelBlockSpec, pools: Mapping[str, PoolRoute] | None) -> str | None:
    """Where the adapter's own tasks for ``block`` go: the launch of a run that starts with it, its chord body
    and errback, its deadline.

    When every step names a pool, the queue of the first step's pool: a deployment may run pool workers
    only, and those workers, which run the block's steps, also run these tasks. Otherwise (a step on the
    app's default queue, a fan-out, or a ``fallback_to_local`` pool, which may have no worker at all)
    ``None``: the app's default queue and routes.
    """
    if not block.steps or any(step.worker_pool is None for step in block.steps):
        return None
    route = (pools or {})[str(block.steps[0].worker_pool)]
    return None if route.fallback_to_local else route.queue


def message_priority(app: Any, priority: int) -> int:
    """The broker's message priority for a step's ``priority`` (0 lowest .. 9 highest): kept on RabbitMQ,
    inverted on Redis (kombu pops priority 0 first). The in-memory transport has no priorities."""
    return broker_priority(priority, str(app.conf.broker_url or "memory://"))
