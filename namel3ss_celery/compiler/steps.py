"""Step messages and their signatures: one ``n3.step.<target>`` message per step."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from celery import canvas

from ..errors import CompileError
from ..plan.kinds import Join
from ..plan.message import StepMessage, Sticky, StoredContext
from ..plan.model import PoolRoute
from ..registry import STEP_TASK_PREFIX
from ..routing.distribution import STICKY_KEY_FIELD
from ..routing.policy import HARD_LIMIT_GRACE
from ..routing.queues import broker_priority
from ..spec import ParallelBlockSpec, step_key


def step_message(
    block: ParallelBlockSpec,
    index: int,
    *,
    run_id: str,
    node: str,
    context: dict[str, Any],
    join: Join,
    feed: bool = False,
    deadline: float | None = None,
    pools: Mapping[str, PoolRoute] | None = None,
) -> StepMessage:
    """The message a step task receives for step ``index`` of ``block``.

    A ``StoredContext`` (a large context, stored once in the run's record) travels as its reference.
    A step routed to a pool (``pools``) also carries its task queue's retry
    delays, its dead-letter queue and, under at_least_once, how many
    deliveries it may take.

    Raises:
        CompileError: the message is larger than its task queue's ``max_message_size``.
    """
    step = block.steps[index]
    message = StepMessage(
        run=run_id,
        node=node,
        index=index,
        total=len(block.steps),
        key=step_key(step, index),
        join=join,
        strategy=block.strategy,
        step=step.payload(),
        context=context,
        context_ref=context.ref if isinstance(context, StoredContext) else None,
        fail_fast=block.fail_fast,
        retries=block.max_retries if block.retry_failed else 0,
        feed=feed,
        deadline=deadline,
    )
    route = (pools or {}).get(step.worker_pool) if step.worker_pool else None
    if route is None:
        return message
    countdowns = route.countdowns
    retries = len(countdowns) if countdowns is not None else message.retries
    sticky = None
    if route.sticky:  # the worker that first takes a key keeps it (worker side: worker.sticky)
        sticky = Sticky(str(step.worker_pool), str(message.step.get(STICKY_KEY_FIELD) or step.target))
    message = replace(
        message,
        retries=0 if route.fail_fast else retries,  # fail_fast: no retry, remote or local
        countdowns=countdowns,
        dlq=route.dead_letter,
        sticky=sticky,
        retry_local=route.retry_local,
        max_wait=route.max_wait,
        max_wait_field=route.max_wait_field,
        deliveries=len(countdowns or ()) + 1 if route.at_least_once else None,  # a poison step cannot come back forever
    )
    if route.max_message_size is not None:
        size = len(json.dumps(message.encode()).encode())
        if size > route.max_message_size:
            raise CompileError(
                f"step {message.key!r} makes a {size}-byte message, over the max_message_size "
                f"({route.max_message_size}) of queue {route.queue!r}",
                path=f"{node}.steps[{index}]",
            )
    return message


def step_signature(
    app: Any, message: StepMessage, expires_at: float | None, queue: str | None = None
) -> canvas.Signature:
    """One immutable signature; a block deadline makes its message expire, so it never starts late.

    ``queue`` is the queue of the step's worker pool; without one, the app's own routes decide.
    """
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if message.step.get("priority") is not None:
        options["priority"] = message_priority(app, int(message.step["priority"]))
    if expires_at is not None:
        options["expires"] = datetime.fromtimestamp(expires_at, tz=timezone.utc)
    limit = message.timeout_seconds
    if limit:
        # Celery's time limits (prefork): a soft one the step sees as a timeout, a hard one that kills it.
        options["soft_time_limit"] = limit
        options["time_limit"] = limit + HARD_LIMIT_GRACE
    # A short argsrepr: what Flower and worker logs show, without Celery repr()-ing the whole payload.
    options["argsrepr"] = f"(step {message.key!r} of block {message.node!r}, run {message.run})"
    return app.signature(STEP_TASK_PREFIX + message.target, args=(message.encode(),), immutable=True, **options)


def step_signatures(
    app: Any,
    block: ParallelBlockSpec,
    run_id: str,
    node: str,
    context: dict[str, Any],
    join: Join,
    expires_at: float | None = None,
    indexes: Sequence[int] | None = None,
    feed: bool = False,
    pools: Mapping[str, PoolRoute] | None = None,
) -> list[canvas.Signature]:
    """The signatures of the steps at ``indexes`` (all by default), named after their targets."""
    now = time.time()
    signatures = []
    for i in indexes if indexes is not None else range(len(block.steps)):
        message = step_message(
            block, i, run_id=run_id, node=node, context=context, join=join, feed=feed, deadline=expires_at, pools=pools
        )
        signatures.append(
            step_signature(app, message, message.expires(now), pool_queue(block.steps[i].worker_pool, pools))
        )
    return signatures


def pool_queue(pool: str | None, pools: Mapping[str, PoolRoute] | None) -> str | None:
    """The queue of a step's worker pool (``check_plan`` made sure the pool exists)."""
    return (pools or {})[pool].queue if pool else None


def message_priority(app: Any, priority: int) -> int:
    """The broker's message priority for a step's ``priority`` (0 lowest .. 9 highest): kept on RabbitMQ,
    inverted on Redis (kombu pops priority 0 first). The in-memory transport has no priorities."""
    return broker_priority(priority, str(app.conf.broker_url or "memory://"))
