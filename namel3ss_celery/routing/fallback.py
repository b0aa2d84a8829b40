"""fallback_to_local: which steps of a block its publisher runs itself, because no worker consumes their queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plan.model import PoolRoute
from ..spec import ParallelBlockSpec
from .queues import Broker, broker_kind

INSPECT_TIMEOUT = 1.0  # seconds Redis workers have to say which queues they consume


def consumed(app: Any, queue: str) -> bool:
    """Whether any worker consumes ``queue`` now.

    RabbitMQ counts a queue's consumers (a passive declare; a queue never
    declared has none). Redis keeps no such count, so the workers are asked
    (``inspect().active_queues()``, waiting ``INSPECT_TIMEOUT``).
    """
    if broker_kind(str(app.conf.broker_url or "memory://")) is Broker.RABBITMQ:
        with app.connection_for_write() as connection:
            channel = connection.channel()
            try:
                _name, _messages, consumers = channel.queue_declare(queue, passive=True)
            except connection.channel_errors:  # 404: the queue does not exist, so nobody consumes it
                return False
            channel.close()
            return int(consumers) > 0
    replies = app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    return any(q.get("name") == queue for queues in replies.values() for q in queues or ())


def fallback_steps(app: Any, block: ParallelBlockSpec, pools: Mapping[str, PoolRoute]) -> frozenset[int]:
    """The steps of ``block`` in a ``fallback_to_local`` pool whose queue no worker consumes (each queue asked once)."""
    idle: dict[str, bool] = {}
    local = set()
    for index, step in enumerate(block.steps):
        route = pools.get(step.worker_pool) if step.worker_pool else None
        if route is None or not route.fallback_to_local:
            continue
        if route.queue not in idle:
            idle[route.queue] = not consumed(app, route.queue)
        if idle[route.queue]:
            local.add(index)
    return frozenset(local)
