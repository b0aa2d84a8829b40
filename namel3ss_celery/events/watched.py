"""The event types an app's workers listen to, kept in the store: an emitting process sends an event to
the workers only when some worker's triggers or handlers watch its type (``ANY_TYPE``: a handler of
every type). Each worker marks its program's types when it compiles them (kept ``WATCHED_TTL``, renewed
at every load); an emitter trusts what it read for ``WATCHED_FRESH`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

WATCHED_PREFIX = "n3:events:watched:"  # + an app's default queue: the event types its workers' triggers watch
WATCHED_TTL = 86_400  # seconds; renewed whenever a worker loads a program with triggers
WATCHED_FRESH = 2.0  # seconds a process trusts what it read of the watched types
ANY_TYPE = "*"  # among the watched types: a handler of every event type


class WatchedTypes:
    """The watched event types of ``app``'s default queue, in the store ``store()`` (Redis; none in memory)."""

    def __init__(self, app: Any, store: Callable[[], Any]) -> None:
        self.app = app
        self._store = store
        self._read: tuple[float, frozenset[str]] = (0.0, frozenset())

    def key(self) -> str:
        """Where the event types watched by the workers of this app's default queue are: match tasks go
        there, so an app sends them only for types those workers' triggers and handlers listen to."""
        return WATCHED_PREFIX + str(self.app.conf.task_default_queue)

    def mark(self, types: set[str]) -> None:
        client = getattr(self._store(), "client", None)
        if client is not None and types:
            with client.pipeline() as pipe:
                pipe.sadd(self.key(), *sorted(types))
                pipe.expire(self.key(), WATCHED_TTL)
                pipe.execute()

    def read(self) -> frozenset[str]:
        read_at, types = self._read
        if time.monotonic() - read_at < WATCHED_FRESH:
            return types
        client = getattr(self._store(), "client", None)
        types = frozenset(str(t) for t in client.smembers(self.key())) if client is not None else frozenset()
        self._read = (time.monotonic(), types)
        return types
