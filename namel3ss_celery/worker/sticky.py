"""distribution_policy sticky: the first pool worker to take a key keeps it, while it answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.utils.nodenames import worker_direct
from kombu.messaging import Producer

from ..engine.ports import CoordinationStore
from ..plan.message import Sticky

logger = logging.getLogger("namel3ss_celery")

PING_TIMEOUT = 1.0  # seconds a sticky key's worker has to answer before another worker takes the key
ALIVE_FOR = 10.0  # seconds a worker's answer is trusted
DRAIN_LIMIT = 10_000  # steps moved out of a dead worker's direct queue at one take-over


class StickyKeys:
    """The sticky keys of one worker process.

    Args:
        app: the worker's Celery app.
        store: where keys and their owners live (made on first use).
        ttl: seconds a key is remembered after its last use.
    """

    def __init__(self, app: Any, store: Callable[[], CoordinationStore], ttl: int) -> None:
        self.app = app
        self._store = store
        self.ttl = ttl
        self.direct = False  # this worker consumes its own direct queue (where sticky keys are forwarded)
        self.queue: str | None = None  # the pool's queue, where a dead worker's steps go back
        self._answered: dict[str, float] = {}  # worker node -> until when its last ping answer counts
        self._unsticky: set[str] = set()  # sticky pools this process has warned it cannot keep keys for

    def forwarded(self, task: Any, sticky: Sticky) -> bool:
        """True when this step was sent on to the key's worker (its direct queue); a key whose worker no
        longer answers is taken over here."""
        me = task.request.hostname or ""
        if not self.direct:
            if sticky.pool not in self._unsticky:  # once per pool and process, not once per step
                self._unsticky.add(sticky.pool)
                logger.warning(
                    "sticky steps of pool %s run here without keeping their keys: this worker does not consume "
                    "its direct queue (start it with --n3-pool or namel3ss-celery worker --pool)",
                    sticky.pool,
                )
            return False
        owner = self._store().stick(sticky.pool, sticky.key, me, self.ttl)
        if owner == me:
            return False
        if not self._alive(owner):
            logger.warning(
                "sticky key %r of pool %s: worker %s does not answer; %s takes it", sticky.key, sticky.pool, owner, me
            )
            self._store().stick(sticky.pool, sticky.key, me, self.ttl, take_over=True)
            self._drain(owner)
            return False
        task.signature_from_request(task.request, queue=worker_direct(owner)).apply_async()
        return True

    def _drain(self, dead: str) -> None:
        """Move the steps waiting in a dead worker's direct queue back to this pool's queue, where other
        workers take them (a step the dead worker had already taken comes back only when a worker with
        its node name starts again, or its block's timeout_seconds ends the block)."""
        if self.queue is None:
            return
        moved = 0
        with self.app.connection_for_write() as connection:
            channel = connection.channel()
            producer = Producer(channel)  # type: ignore[no-untyped-call]
            try:
                source = worker_direct(dead)(channel)
                try:
                    source.queue_declare(passive=True)
                except connection.channel_errors:
                    logger.info("worker %s has no direct queue left: no step of it waits there", dead)
                    return
                while moved < DRAIN_LIMIT and (message := source.get(no_ack=False)) is not None:
                    producer.publish(  # type: ignore[no-untyped-call]
                        message.body,
                        exchange="",
                        routing_key=self.queue,
                        headers=message.headers,
                        content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        priority=message.properties.get("priority"),
                    )
                    message.ack()
                    moved += 1
            finally:
                channel.close()
        if moved:
            logger.warning("moved %d steps from %s's direct queue back to %s", moved, dead, self.queue)

    def _alive(self, node: str) -> bool:
        """Whether worker ``node`` answers a ping (a yes is remembered for ``ALIVE_FOR`` seconds)."""
        now = time.monotonic()
        if self._answered.get(node, 0.0) > now:
            return True
        if self.app.control.ping(destination=[node], timeout=PING_TIMEOUT):
            self._answered[node] = now + ALIVE_FOR
            return True
        return False
