"""How much work waits for a pool: the messages ready in the broker in its queues (``broker_depth``) and
the ones this worker has prefetched but not started (``local_backlog``), which the broker no longer counts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery.worker import state

from .queues import redis_priority_lists


def broker_depth(connection: Any, queues: Iterable[str]) -> int:
    """Messages ready in the broker in these queues (a kombu ``Connection``; delivered, unacked ones not counted).

    Redis: ``LLEN`` of each queue's list and of its priority lists (a missing
    list counts 0). Other transports: a passive ``queue_declare``; a queue
    not declared yet counts 0.

    Raises:
        kombu's ``OperationalError``, or the transport's ``connection_errors``
        and ``channel_errors`` (but a queue's NOT_FOUND).
    """
    names = list(dict.fromkeys(queues))
    if connection.transport.driver_type == "redis":
        with connection.default_channel.conn_or_acquire() as client, client.pipeline() as pipe:
            for name in names:
                for key in redis_priority_lists(name):
                    pipe.llen(key)
            return sum(int(size) for size in pipe.execute())
    total = 0
    for name in names:
        with connection.channel() as channel:  # a fresh channel each time: NOT_FOUND closes it on RabbitMQ
            try:
                total += int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors as exc:
                if not _not_found(exc):
                    raise
    return total


def local_backlog() -> int:
    """Messages this worker process has prefetched and not yet handed to a pool process."""
    active = state.active_requests
    return sum(1 for request in list(state.reserved_requests) if request not in active)


def _not_found(exc: BaseException) -> bool:
    """A queue that does not exist: reply code 404 (py-amqp's NotFound, kombu's virtual transports)."""
    return str(getattr(exc, "reply_code", "")) == "404"
