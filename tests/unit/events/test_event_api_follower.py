"""The event API's follower rides out a store that does not answer (Redis restarting): it waits, then reads on
from the last event it handled, so a handler misses nothing published meanwhile."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import redis

from namel3ss_celery.events.executor import EventDrivenExecutor
from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.events.stream import MemoryEventStore
from tests.waiting import wait_until


class Restarting(MemoryEventStore):
    """A memory store whose reads fail while ``away`` is set, as Redis's do while it restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.away = threading.Event()
        self.refused = 0

    def read(self, after: str = "0", count: int = 100, block: float | None = None) -> list[tuple[str, Event]]:
        if self.away.is_set():
            self.refused += 1
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return super().read(after, count, block)


def test_a_handler_misses_nothing_published_while_the_store_was_away() -> None:
    store = Restarting()
    n3: Any = SimpleNamespace(events=SimpleNamespace(store=lambda: store))
    seen: list[str] = []
    got = threading.Condition()

    def handler(event: Event) -> None:
        with got:
            seen.append(event.data["n"])
            got.notify_all()

    def wait_for(count: int) -> None:
        with got:
            assert got.wait_for(lambda: len(seen) >= count, timeout=10), seen

    async def scenario() -> None:
        executor = EventDrivenExecutor(n3=n3, enable_websocket=False)
        await executor.register_event_handler([EventType.CUSTOM], handler)
        await executor.start()
        try:
            store.append(Event.new(EventType.CUSTOM, "t", {"n": "before"}))
            await asyncio.to_thread(wait_for, 1)
            store.away.set()
            await asyncio.to_thread(wait_until, lambda: store.refused >= 1, 10, "the follower never tried the store")
            store.append(Event.new(EventType.CUSTOM, "t", {"n": "while away"}))
            store.away.clear()
            store.append(Event.new(EventType.CUSTOM, "t", {"n": "after"}))
            await asyncio.to_thread(wait_for, 3)
        finally:
            await executor.stop()

    asyncio.run(scenario())
    assert seen == ["before", "while away", "after"]
    assert store.refused >= 1
