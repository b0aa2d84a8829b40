"""What the watchdogs read and write in the Redis store: block deadlines, the leases of launches and settles,
worker heartbeats and the steps each worker holds. Sorted sets scored by time (``DEADLINES_KEY``,
``LEASES_KEY``) and a set of workers; ``RedisStore`` has these operations through ``RedisWatched``."""

from __future__ import annotations

from typing import Any

from ..plan.fields import DEADLINES_KEY, LEASES_KEY, WORKERS_KEY, held_key, node_member, worker_key

WORKERS_KEPT = 240  # heartbeats' lifetimes the set of workers outlives the last beat of any of them


class RedisWatched:
    """Deadlines, leases, heartbeats and held steps; the class using it has ``client`` (decoding responses)
    and ``_take_lease`` (the ``TAKE_LEASE`` script)."""

    client: Any
    _take_lease: Any

    def add_deadline(self, run_id: str, node: str, at: float, ttl: int) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(DEADLINES_KEY, {node_member(run_id, node): at}, nx=True)  # a launch finished later keeps it
            pipe.expire(DEADLINES_KEY, ttl)
            pipe.execute()

    def due_deadlines(self, now: float, limit: int) -> list[tuple[str, str]]:
        members = self.client.zrangebyscore(DEADLINES_KEY, "-inf", now, start=0, num=limit)
        return [tuple(member.split("\n", 1)) for member in members]  # type: ignore[misc]

    def drop_deadline(self, run_id: str, node: str) -> None:
        self.client.zrem(DEADLINES_KEY, node_member(run_id, node))

    def renew_lease(self, run_id: str, node: str, until: float) -> None:
        self.client.zadd(LEASES_KEY, {node_member(run_id, node): until}, xx=True)

    def drop_lease(self, run_id: str, node: str) -> None:
        self.client.zrem(LEASES_KEY, node_member(run_id, node))

    def expired_leases(self, now: float, limit: int) -> list[tuple[str, str]]:
        members = self.client.zrangebyscore(LEASES_KEY, "-inf", now, start=0, num=limit)
        return [tuple(member.split("\n", 1)) for member in members]  # type: ignore[misc]

    def take_lease(self, run_id: str, node: str, now: float, until: float) -> bool:
        return bool(self._take_lease(keys=[LEASES_KEY], args=[node_member(run_id, node), now, until]))

    def beat(self, worker: str, ttl: int, broker: str = "") -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(worker_key(worker), broker or "1", ex=ttl)  # "1": an earlier release, or no broker named
            pipe.sadd(WORKERS_KEY, worker)
            pipe.expire(WORKERS_KEY, ttl * WORKERS_KEPT)  # renewed by every beat of every worker
            pipe.execute()

    def lost_workers(self, limit: int) -> list[str]:
        workers = sorted(self.client.smembers(WORKERS_KEY))
        if not workers:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.exists(worker_key(worker))  # its heartbeat
                pipe.exists(held_key(worker))  # the steps it holds
            found = pipe.execute()
        beats, holds = found[0::2], found[1::2]
        silent = [(w, held) for w, beat, held in zip(workers, beats, holds, strict=True) if not beat]
        gone = [w for w, held in silent if not held]  # stopped, holding nothing: forgotten
        if gone:
            self.client.srem(WORKERS_KEY, *gone)
        return [w for w, held in silent if held][:limit]

    def live_brokers(self) -> set[str]:
        workers = sorted(self.client.smembers(WORKERS_KEY))
        beats = self.client.mget([worker_key(w) for w in workers]) if workers else []
        return {beat for beat in beats if beat and beat != "1"}

    def held_steps(self, worker: str) -> list[str]:
        return sorted(self.client.smembers(held_key(worker)))

    def release(self, worker: str, member: str) -> None:
        self.client.srem(held_key(worker), member)
