"""Where events live: a Redis stream per deployment (the coordination store's database), read by id.

An event that arrives while nobody listens stays in the stream until it is trimmed (``MAX_EVENTS``, the
oldest first; the stream itself is dropped ``STREAM_TTL`` after its newest event), so a client that connects later, or reconnects, reads from the last id it saw. The same
store keeps the triggers' windows (deduplication claims and rate counters) with Redis's own clock. The
embedded default keeps all of it in memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import redis

from ..plan.fields import MAX_EVENTS, STREAM_FIELD, STREAM_KEY, STREAM_TTL
from .model import Event

logger = logging.getLogger("namel3ss_celery")

WINDOW_PREFIX = "n3:events:window:"  # a trigger's dedup claims and rate counters
ONCE_PREFIX = "n3:events:once:"  # + an event id appended with once=True: it is in the stream already
STORE_AWAY = (redis.ConnectionError, redis.TimeoutError)  # what the event store raises while Redis is away
SWEEP_AT = 10_000  # the memory store's windows: more than this, and those that ended are dropped
ONCE_TTL = 3600  # seconds such an id is remembered (a lease's resume comes within minutes)
MARK_PREFIX = "n3:events:mark:"  # + a reader's name: the id of the last event it handled

# XADD an event unless its id was appended before (SET NX of KEYS[2]): nil for a repeat.
_APPEND_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""

_COUNT = "local n = redis.call('INCR', KEYS[1]); if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end; return n"


class EventStore(Protocol):
    """The stream and the trigger windows."""

    def append(self, event: Event) -> str:
        """Add ``event`` to the stream; its stream id (ordered: later events have greater ids)."""
        ...

    def append_once(self, event: Event) -> str | None:
        """``append``, unless an event of the same id was appended so (within ``ONCE_TTL``): ``None`` then."""
        ...

    def append_claiming(self, event: Event, claims: Sequence[tuple[str, float]]) -> tuple[str, list[bool]]:
        """``append``, then ``claim`` each of ``claims`` (key, seconds), in one round trip: the stream id, and
        which claims were won."""
        ...

    def read(self, after: str = "0", count: int = 100, block: float | None = None) -> list[tuple[str, Event]]:
        """Events after the id ``after`` (``"0"``: from the oldest kept), at most ``count``; with ``block``,
        wait up to that many seconds for one when there is none."""
        ...

    def newest(self) -> str:
        """The id of the newest event kept (``"0"`` when there is none)."""
        ...

    def newest_events(self, count: int) -> list[Event]:
        """The newest ``count`` events, newest first."""
        ...

    def claim(self, key: str, seconds: float) -> bool:
        """True for the one caller that claims ``key`` first; the claim lasts ``seconds``."""
        ...

    def claim_all(self, claims: Sequence[tuple[str, float]]) -> list[bool]:
        """``claim`` of each (key, seconds), in one trip; whether each was claimed here first."""
        ...

    def count(self, key: str, seconds: float) -> int:
        """Count one more in the window ``key``, which starts at its first count and lasts ``seconds``."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Give back the claims ``keys`` (made by ``claim`` or ``append_claiming``)."""
        ...

    def now(self) -> float:
        """The store's clock, in seconds since the epoch (Redis ``TIME``): the one every window keeps."""
        ...

    def mark(self, reader: str, stream_id: str) -> None:
        """Remember that ``reader`` handled the events up to ``stream_id`` (as long as the stream keeps events)."""
        ...

    def marked(self, reader: str) -> str | None:
        """The id ``reader`` last marked (``None``: never, or longer ago than the stream keeps events)."""
        ...

    def close(self) -> None: ...


class RedisEventStore:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self._count = self.client.register_script(_COUNT)
        self._append_once = self.client.register_script(_APPEND_ONCE)

    def append(self, event: Event) -> str:
        with self.client.pipeline(transaction=False) as pipe:
            add_to_stream(pipe, stream_entry(event))
            stream_id, _ = pipe.execute()
        return str(stream_id)

    def append_claiming(self, event: Event, claims: Sequence[tuple[str, float]]) -> tuple[str, list[bool]]:
        with self.client.pipeline(transaction=True) as pipe:  # all or none: never claims without the event
            add_to_stream(pipe, stream_entry(event))
            for key, seconds in claims:
                pipe.set(WINDOW_PREFIX + key, "1", nx=True, px=max(1, int(seconds * 1000)))
            stream_id, _, *won = pipe.execute()
        return str(stream_id), [bool(w) for w in won]

    def append_once(self, event: Event) -> str | None:
        text = stream_entry(event)
        added = self._append_once(
            keys=[STREAM_KEY, ONCE_PREFIX + event.event_id], args=[text, ONCE_TTL, MAX_EVENTS, STREAM_TTL]
        )
        return None if added is None else str(added)

    def read(self, after: str = "0", count: int = 100, block: float | None = None) -> list[tuple[str, Event]]:
        wait = None if block is None else max(1, int(block * 1000))
        replies = self.client.xread({STREAM_KEY: after}, count=count, block=wait) or []
        return [(str(i), e) for _key, entries in replies for i, f in entries if (e := readable(i, f)) is not None]

    def newest_events(self, count: int) -> list[Event]:
        found = self.client.xrevrange(STREAM_KEY, count=count)
        return [e for i, f in found if (e := readable(i, f)) is not None]

    def newest(self) -> str:
        found = self.client.xrevrange(STREAM_KEY, count=1)
        return str(found[0][0]) if found else "0"

    def claim(self, key: str, seconds: float) -> bool:
        return bool(self.client.set(WINDOW_PREFIX + key, "1", nx=True, px=max(1, int(seconds * 1000))))

    def claim_all(self, claims: Sequence[tuple[str, float]]) -> list[bool]:
        with self.client.pipeline(transaction=False) as pipe:
            for key, seconds in claims:
                pipe.set(WINDOW_PREFIX + key, "1", nx=True, px=max(1, int(seconds * 1000)))
            return [bool(won) for won in pipe.execute()]

    def count(self, key: str, seconds: float) -> int:
        return int(self._count(keys=[WINDOW_PREFIX + key], args=[max(1, int(seconds * 1000))]))

    def release(self, keys: Sequence[str]) -> None:
        self.client.delete(*(WINDOW_PREFIX + key for key in keys))

    def now(self) -> float:
        seconds, microseconds = self.client.time()
        return float(seconds) + float(microseconds) / 1e6

    def mark(self, reader: str, stream_id: str) -> None:
        self.client.set(MARK_PREFIX + reader, stream_id, ex=STREAM_TTL)

    def marked(self, reader: str) -> str | None:
        found = self.client.get(MARK_PREFIX + reader)
        return None if found is None else str(found)

    def close(self) -> None:
        self.client.close()


class MemoryEventStore:
    """The embedded default's events: this process only."""

    def __init__(self) -> None:
        self._events: list[tuple[str, Event]] = []
        self._windows: dict[str, tuple[int, float]] = {}
        self._sweep_at = SWEEP_AT  # how many windows before the ended ones are dropped
        self._marks: dict[str, str] = {}
        self._changed = threading.Condition()
        self._last = 0

    def append(self, event: Event) -> str:
        with self._changed:
            self._last += 1
            stream_id = f"{self._last}-0"
            self._events.append((stream_id, event))
            del self._events[:-MAX_EVENTS]
            self._changed.notify_all()
            return stream_id

    def append_claiming(self, event: Event, claims: Sequence[tuple[str, float]]) -> tuple[str, list[bool]]:
        with self._changed:
            return self.append(event), [self.claim(key, seconds) for key, seconds in claims]

    def append_once(self, event: Event) -> str | None:
        with self._changed:
            if self._window(ONCE_PREFIX + event.event_id, ONCE_TTL) != 1:
                return None
            return self.append(event)

    def read(self, after: str = "0", count: int = 100, block: float | None = None) -> list[tuple[str, Event]]:
        after_n = stream_order(after)
        deadline = time.monotonic() + (block or 0)
        with self._changed:
            while True:
                found = [(i, e) for i, e in self._events if stream_order(i) > after_n][:count]
                left = deadline - time.monotonic()
                if found or block is None or left <= 0:
                    return found
                self._changed.wait(left)

    def newest(self) -> str:
        with self._changed:
            return f"{self._last}-0" if self._last else "0"

    def newest_events(self, count: int) -> list[Event]:
        with self._changed:
            return [event for _i, event in reversed(self._events[-count:])]

    def _window(self, key: str, seconds: float) -> int:
        now = time.monotonic()
        if len(self._windows) >= self._sweep_at:  # drop the windows that ended, as Redis's TTLs do
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._sweep_at = max(SWEEP_AT, 2 * len(self._windows))
        n, until = self._windows.get(key, (0, 0.0))
        if until <= now:
            n, until = 0, now + seconds
        self._windows[key] = (n + 1, until)
        return n + 1

    def claim(self, key: str, seconds: float) -> bool:
        with self._changed:
            return self._window(key, seconds) == 1

    def claim_all(self, claims: Sequence[tuple[str, float]]) -> list[bool]:
        with self._changed:
            return [self._window(key, seconds) == 1 for key, seconds in claims]

    def count(self, key: str, seconds: float) -> int:
        with self._changed:
            return self._window(key, seconds)

    def release(self, keys: Sequence[str]) -> None:
        with self._changed:
            for key in keys:
                self._windows.pop(key, None)

    def now(self) -> float:
        return time.time()

    def mark(self, reader: str, stream_id: str) -> None:
        with self._changed:
            self._marks[reader] = stream_id

    def marked(self, reader: str) -> str | None:
        with self._changed:
            return self._marks.get(reader)

    def close(self) -> None:
        pass


def stream_order(stream_id: str) -> tuple[int, int]:
    """A stream id (``"1700000000000-3"``; ``"0"``) as what orders it."""
    millis, _, sequence = stream_id.partition("-")
    return int(millis), int(sequence or 0)


def readable(stream_id: str, entry: Mapping[str, str]) -> Event | None:
    """The event of a stream entry; ``None``, said in the log, for one this release cannot read (an event type
    of a later release, written by one of its processes beside this one's): a reader goes on past it."""
    try:
        return Event.from_dict(json.loads(entry[STREAM_FIELD]))
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("event %s of the stream cannot be read here, and is passed over: %r", stream_id, exc)
        return None


def stream_entry(event: Event) -> str:
    """``event`` as the stream keeps it (the ``event`` field of its entry)."""
    return json.dumps(event.to_dict())


def add_to_stream(pipe: Any, entry: str) -> None:
    """Queue on the Redis pipeline ``pipe`` the append of ``entry`` (``stream_entry``) to the stream, trimmed
    to ``MAX_EVENTS``, and the stream's expiry: two replies (the entry's id, then the expiry's)."""
    pipe.xadd(STREAM_KEY, {STREAM_FIELD: entry}, maxlen=MAX_EVENTS, approximate=True)
    pipe.expire(STREAM_KEY, STREAM_TTL)


def event_store(coordination_url: str) -> EventStore:
    """The event store on the coordination store's server (``memory://``: this process)."""
    if coordination_url.startswith("memory://"):
        return MemoryEventStore()
    return RedisEventStore(coordination_url)


def follow(store: EventStore, after: str = "$", poll: float = 1.0) -> Iterator[tuple[str, Event]]:
    """Every event after the id ``after`` (``"$"``: from now on), as it arrives, with its id (give it back
    as ``after`` to resume there); the caller stops iterating."""
    if after == "$":
        after = store.newest()
    while True:
        for stream_id, event in store.read(after, block=poll):
            after = stream_id
            yield stream_id, event
