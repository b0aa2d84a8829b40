"""The Redis coordination store: a hash per run, a hash of step envelopes per block, a done list."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..engine.ports import CoordinationStore, Held, Lease
from ..errors import StoreUnavailable, UnknownRun
from ..events.stream import add_to_stream
from ..plan.fields import (
    LEASES_KEY,
    done_key,
    held_key,
    list_key,
    node_member,
    run_key,
    steps_key,
    sticky_key,
)
from .redis_scripts import (
    CLAIM,
    CLAIM_AND_READ,
    FILE_STEP,
    FINISH,
    INCR_EXISTING,
    PUSH_ITEMS,
    RECORD_STEP,
    SET_FIELDS,
    SET_UNLESS,
    TAKE_LEASE,
    TAKE_STEP,
)
from .redis_watched import RedisWatched
from .store import MemoryStore

WAIT_SLICE = 2.0
FEED_CHUNK = 1000  # items per RPUSH in PUSH_ITEMS: Lua's unpack has a bound (about 8000 values)
LEASES_KEPT = 86400  # seconds the index of leases outlives the last lease taken


def _flat(fields: Mapping[str, str]) -> list[str]:
    """Field/value pairs as a script takes them: field, value, field, value..."""
    return [part for item in fields.items() for part in item]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (HGETALL: field, value, field, value...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


QUICK_TIMEOUT = 1.0  # seconds take_step waits for Redis: it runs in a worker's main process, before an ack
RETRIES = 12  # reconnects of one call before it gives up: about 8 s with the backoff below
BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)


def connect(url: str) -> Any:
    """A client that rides out a Redis restart of a few seconds: each call reconnects and is sent again
    (``RETRIES``, with exponential backoff) before it raises. Scripts are loaded again as needed."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(BACKOFF, RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class RedisStore(RedisWatched):
    """``CoordinationStore`` on Redis. Waiting uses ``BLMOVE`` on a one-item list, so many can wait.

    A Redis that does not answer after the client's own reconnects raises ``StoreUnavailable``.

    Every write to a run is one script that first checks the run's hash exists (see the scripts above), so
    no key of a run is ever written without an expiry: a claim on a gone run is not won, ``finish`` returns
    False, and the other writes raise ``UnknownRun``.

    Args:
        url: the Redis URL (``redis://host:port/db``).
        client: a ``redis.Redis`` to use instead of one made from ``url`` (it must decode responses).
    """

    def __init__(self, url: str, client: Any | None = None) -> None:
        self.url = url
        self.client: Any = client if client is not None else connect(url)
        register = self.client.register_script
        self._set_unless = register(SET_UNLESS)
        self._set_fields = register(SET_FIELDS)
        self._claim = register(CLAIM)
        self._claim_and_read = register(CLAIM_AND_READ)
        self._record_step = register(RECORD_STEP)
        self._file_step = register(FILE_STEP)
        self._push_items = register(PUSH_ITEMS)
        self._incr_existing = register(INCR_EXISTING)
        self._finish = register(FINISH)
        self._take_lease = register(TAKE_LEASE)
        self._take_step = register(TAKE_STEP)
        # take_step's own client: it does not wait for a Redis that does not answer (no connection until used)
        self._quick: Any = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=QUICK_TIMEOUT, socket_connect_timeout=QUICK_TIMEOUT
        )

    def create_run(
        self, run_id: str, fields: Mapping[str, str], ttl: int, leases: Sequence[Lease] = (), first_event: str = ""
    ) -> bool:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping=dict(fields))
            pipe.expire(run_key(run_id), ttl)
            if leases:
                pipe.zadd(LEASES_KEY, {node_member(run_id, lease.node): lease.until for lease in leases})
                pipe.expire(LEASES_KEY, LEASES_KEPT)
            if first_event:
                add_to_stream(pipe, first_event)
            pipe.execute()
        return bool(first_event)

    def run_record(self, run_id: str) -> dict[str, str] | None:
        record: dict[str, str] = self.client.hgetall(run_key(run_id))
        return record or None

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        if self._set_fields(keys=[run_key(run_id)], args=["0", *_flat(fields)]) is None:
            raise UnknownRun(run_id)

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        return list(self.client.hmget(run_key(run_id), list(fields)))

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        value = self._incr_existing(keys=[run_key(run_id)], args=[field, amount])
        if value is None:
            raise UnknownRun(run_id)  # HINCRBY alone would make a new record, with no expiry
        return int(value)

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        record = self._set_fields(keys=[run_key(run_id)], args=["1", *_flat(fields)])
        if record is None:
            raise UnknownRun(run_id)
        return _pairs(record)

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str], held: Held | None = None) -> bool:
        keys = [run_key(run_id), held_key(held.worker) if held else run_key(run_id)]
        args = [field, value, held.member if held else "", held.ttl if held else 0, *guards]
        outcome = int(self._set_unless(keys=keys, args=args))
        if outcome < 0:
            raise UnknownRun(run_id)
        return outcome == 1

    def take_step(
        self, run_id: str, node: str, index: int, held: Held, guards: Sequence[str], passed: tuple[str, str]
    ) -> bool:
        keys = [run_key(run_id), steps_key(run_id, node), held_key(held.worker)]
        args = [index, held.member, held.ttl, *passed, *guards]
        return bool(self._take_step(keys=keys, args=args, client=self._quick))

    def claim_and_read(
        self, run_id: str, field: str, node: str, lease: Lease | None = None
    ) -> tuple[bool, dict[str, str], dict[int, str]]:
        claimed, record, envelopes = self._claim_and_read(
            keys=[run_key(run_id), steps_key(run_id, node), LEASES_KEY], args=[field, *_leased(run_id, lease)]
        )
        return bool(claimed), _pairs(record), {int(k): v for k, v in _pairs(envelopes).items()}

    def claim(self, run_id: str, field: str, value: str = "1", lease: Lease | None = None) -> bool:
        claimed, _ = self._claim(keys=[run_key(run_id), LEASES_KEY], args=[field, value, "", *_leased(run_id, lease)])
        return bool(claimed)

    def claim_and_get(self, run_id: str, field: str, read: str, lease: Lease | None = None) -> tuple[bool, str | None]:
        args = [field, "1", read, *_leased(run_id, lease)]
        claimed, value = self._claim(keys=[run_key(run_id), LEASES_KEY], args=args)
        return bool(claimed), value

    def stick(self, scope: str, key: str, owner: str, ttl: int, take_over: bool = False) -> str:
        name = sticky_key(scope, key)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(name, owner, ex=ttl, nx=not take_over)
            pipe.get(name)
            pipe.expire(name, ttl)  # a key in use stays with its worker
            current: str = pipe.execute()[1]
        return current

    def record_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool = False) -> int:
        return self._record(run_id, node, index, envelope, ttl, keep)[0]

    def add_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int) -> tuple[int, bool]:
        return self._record(run_id, node, index, envelope, ttl, keep=True)

    def _record(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool) -> tuple[int, bool]:
        recorded = self._record_step(
            keys=[steps_key(run_id, node), run_key(run_id)], args=[index, envelope, ttl, "1" if keep else "0"]
        )
        if recorded is None:
            raise UnknownRun(run_id)
        count, wrote = recorded
        return int(count), bool(wrote)

    def file_step(
        self,
        run_id: str,
        node: str,
        index: int,
        envelope: str,
        ttl: int,
        read: str,
        held: Held | None = None,
    ) -> tuple[int, str | None]:
        # One script, not a MULTI of four commands: the same atomic step, less to send and parse per step.
        keys = [steps_key(run_id, node), run_key(run_id)]
        args: list[Any] = [index, envelope, ttl, read]
        if held is not None:
            keys.append(held_key(held.worker))
            args.append(held.member)
        filed = self._file_step(keys=keys, args=args)
        if filed is None:
            raise UnknownRun(run_id)
        count, value = filed
        return int(count), value

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]:
        return {int(k): v for k, v in self.client.hgetall(steps_key(run_id, node)).items()}

    def push_items(
        self, run_id: str, name: str, items: Sequence[str], ttl: int, mark: tuple[str, str] | None = None
    ) -> None:
        if not items and mark is None:
            return  # nothing to write: no round trip (most blocks have no feed)
        args = [ttl, FEED_CHUNK, *(mark or ("", "")), *items]
        if self._push_items(keys=[list_key(run_id, name), run_key(run_id)], args=args) is None:
            raise UnknownRun(run_id)

    def pop_item(self, run_id: str, name: str) -> str | None:
        item: str | None = self.client.lpop(list_key(run_id, name))
        return item

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        with self.client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hlen(steps_key(run_id, node))
            return {node: int(count) for node, count in zip(nodes, pipe.execute(), strict=True)}

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        return bool(self._finish(keys=[run_key(run_id), done_key(run_id)], args=[ttl, claim or "", *_flat(fields)]))

    def wait(self, run_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            # BLMOVE from the list to itself hands the one item back: every waiter wakes, none consumes it,
            # and it returns at once for a run already finished (``finish`` writes the list and the record
            # together). Each block stays under the client's socket timeout (5 s by default in redis-py).
            # The HMGET is pipelined behind it: Redis runs it once the BLMOVE returns, so a finished run's
            # result comes back in the same round trip.
            left = deadline - time.monotonic()
            with self.client.pipeline(transaction=False) as pipe:
                if left > 0:
                    pipe.blmove(done_key(run_id), done_key(run_id), min(left, WAIT_SLICE), "RIGHT", "LEFT")
                pipe.hmget(run_key(run_id), ["done", "result"])
                done, result = pipe.execute()[-1]
            if done == "1":
                return result or ""
            if deadline - time.monotonic() <= 0:
                return None

    def close(self) -> None:
        """Release the connection pools."""
        self.client.close()
        self._quick.close()


def open_store(url: str) -> CoordinationStore:
    """The coordination store at ``url``: in this process for ``memory://``, else Redis."""
    return MemoryStore() if url.startswith("memory://") else RedisStore(url)


def _leased(run_id: str, lease: Lease | None = None) -> list[Any]:
    """A lease as CLAIM and CLAIM_AND_READ take it: member, score, the index's expiry (an empty member: none)."""
    if lease is None:
        return ["", 0, 0]
    return [node_member(run_id, lease.node), lease.until, LEASES_KEPT]


def _answered(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(store: RedisStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(store, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis does not answer ({type(exc).__name__}: {exc})", store=store.url) from exc

    return call


# Every operation of the store raises StoreUnavailable, not redis-py's own errors, when Redis does not answer.
for _class in (RedisStore, RedisWatched):
    for _name in [n for n, v in vars(_class).items() if callable(v) and not n.startswith("_") and n != "close"]:
        setattr(RedisStore, _name, _answered(getattr(_class, _name)))
