"""The Redis coordination store: a hash per run, a hash of step envelopes per block, a done list."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ..errors import UnknownRun
from ..plan.fields import DEADLINES_KEY, deadline_member, done_key, list_key, run_key, steps_key, sticky_key

WAIT_SLICE = 2.0

# HSET KEYS[1] ARGV[1] ARGV[2] unless one of the fields ARGV[3..] is set; 1 when it was set,
# -1 when the run's record is gone (expired): nothing is written then.
SET_UNLESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# File a step's envelope (HSET KEYS[1] ARGV[1] ARGV[2]), renew the envelopes' expiry (ARGV[3] seconds) and
# read one field of the run (HGET KEYS[2] ARGV[4]): how many steps are filed, and that field (nil when unset).
FILE_STEP = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local filed = redis.call('HLEN', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {filed, redis.call('HGET', KEYS[2], ARGV[4])}
"""


# HINCRBY KEYS[1] ARGV[1] ARGV[2] only when the run's record exists; nil when it is gone.
INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"""

# End a run: write the fields ARGV[3..] (pairs) and done=1 on KEYS[1], then replace the done list KEYS[2] by
# one item, which wakes every waiter; both expire in ARGV[1] seconds. With a field name in ARGV[2], only the
# first caller to set that field does it (1; later ones get 0 and write nothing).
FINISH = """
if ARGV[2] ~= '' and redis.call('HSETNX', KEYS[1], ARGV[2], '1') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'done', '1', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class RedisStore:
    """``CoordinationStore`` on Redis. Waiting uses ``BLMOVE`` on a one-item list, so many can wait."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        self.url = url
        self.client: Any = client if client is not None else redis.Redis.from_url(url, decode_responses=True)
        self._set_unless = self.client.register_script(SET_UNLESS)
        self._incr_existing = self.client.register_script(INCR_EXISTING)
        self._file_step = self.client.register_script(FILE_STEP)
        self._finish = self.client.register_script(FINISH)

    def create_run(self, run_id: str, fields: Mapping[str, str], ttl: int) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping=dict(fields))
            pipe.expire(run_key(run_id), ttl)
            pipe.execute()

    def run_record(self, run_id: str) -> dict[str, str] | None:
        record: dict[str, str] = self.client.hgetall(run_key(run_id))
        return record or None

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        self.client.hset(run_key(run_id), mapping=dict(fields))

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        return list(self.client.hmget(run_key(run_id), list(fields)))

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        value = self._incr_existing(keys=[run_key(run_id)], args=[field, amount])
        if value is None:
            raise UnknownRun(run_id)  # HINCRBY alone would make a new record, with no expiry
        return int(value)

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping=dict(fields))
            pipe.hgetall(run_key(run_id))
            record: dict[str, str] = pipe.execute()[1]
        return record

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str]) -> bool:
        outcome = int(self._set_unless(keys=[run_key(run_id)], args=[field, value, *guards]))
        if outcome < 0:
            raise UnknownRun(run_id)
        return outcome == 1

    def claim_and_read(self, run_id: str, field: str, node: str) -> tuple[bool, dict[str, str], dict[int, str]]:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(run_key(run_id), field, "1")
            pipe.hgetall(run_key(run_id))
            pipe.hgetall(steps_key(run_id, node))
            claimed, record, envelopes = pipe.execute()
        return bool(claimed), record, {int(k): v for k, v in envelopes.items()}

    def claim(self, run_id: str, field: str, value: str = "1") -> bool:
        return bool(self.client.hsetnx(run_key(run_id), field, value))

    def claim_and_get(self, run_id: str, field: str, read: str) -> tuple[bool, str | None]:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(run_key(run_id), field, "1")
            pipe.hget(run_key(run_id), read)
            claimed, value = pipe.execute()
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
        key = steps_key(run_id, node)
        with self.client.pipeline(transaction=True) as pipe:
            if keep:
                pipe.hsetnx(key, str(index), envelope)
            else:
                pipe.hset(key, str(index), envelope)
            pipe.hlen(key)
            pipe.expire(key, ttl)
            _, count, _ = pipe.execute()
        return int(count)

    def file_step(
        self, run_id: str, node: str, index: int, envelope: str, ttl: int, read: str
    ) -> tuple[int, str | None]:
        # One script, not a MULTI of four commands: the same atomic step, less to send and parse per step.
        count, value = self._file_step(
            keys=[steps_key(run_id, node), run_key(run_id)], args=[index, envelope, ttl, read]
        )
        return int(count), value

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]:
        return {int(k): v for k, v in self.client.hgetall(steps_key(run_id, node)).items()}

    def push_items(self, run_id: str, name: str, items: Sequence[str], ttl: int) -> None:
        if not items:
            return
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(list_key(run_id, name), *items)
            pipe.expire(list_key(run_id, name), ttl)
            pipe.execute()

    def pop_item(self, run_id: str, name: str) -> str | None:
        item: str | None = self.client.lpop(list_key(run_id, name))
        return item

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        with self.client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hlen(steps_key(run_id, node))
            return {node: int(count) for node, count in zip(nodes, pipe.execute(), strict=True)}

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        pairs = [part for item in fields.items() for part in item]
        return bool(self._finish(keys=[run_key(run_id), done_key(run_id)], args=[ttl, claim or "", *pairs]))

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

    def add_deadline(self, run_id: str, node: str, at: float, ttl: int) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(DEADLINES_KEY, {deadline_member(run_id, node): at})
            pipe.expire(DEADLINES_KEY, ttl)
            pipe.execute()

    def due_deadlines(self, now: float, limit: int) -> list[tuple[str, str]]:
        members = self.client.zrangebyscore(DEADLINES_KEY, "-inf", now, start=0, num=limit)
        return [tuple(member.split("\n", 1)) for member in members]  # type: ignore[misc]

    def drop_deadline(self, run_id: str, node: str) -> None:
        self.client.zrem(DEADLINES_KEY, deadline_member(run_id, node))

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()
