"""What the watchdogs read and write in the in-memory store: block deadlines, the leases of launches and
settles, worker heartbeats and the steps each worker holds (``MemoryStore`` has them through
``MemoryWatched``; ``redis_watched`` is the same on Redis)."""

from __future__ import annotations

import threading
import time


class MemoryWatched:
    """Deadlines, leases, heartbeats and held steps, under the using class's ``_lock``."""

    _lock: threading.Condition
    _deadlines: dict[tuple[str, str], float]  # (run, node) -> when its block must be decided
    _leases: dict[tuple[str, str], float]  # (run, node) -> until when its launch or settle is held
    _held: dict[str, set[str]]  # worker -> the steps it runs
    _beats: dict[str, float]  # worker -> until when its heartbeat counts
    _brokers: dict[str, str]  # worker -> its broker, as it beats

    def add_deadline(self, run_id: str, node: str, at: float, ttl: int) -> None:
        with self._lock:
            self._deadlines.setdefault((run_id, node), at)

    def due_deadlines(self, now: float, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            due = sorted((at, key) for key, at in self._deadlines.items() if at <= now)
            return [key for _at, key in due[:limit]]

    def drop_deadline(self, run_id: str, node: str) -> None:
        with self._lock:
            self._deadlines.pop((run_id, node), None)

    def renew_lease(self, run_id: str, node: str, until: float) -> None:
        with self._lock:
            if (run_id, node) in self._leases:
                self._leases[(run_id, node)] = until

    def drop_lease(self, run_id: str, node: str) -> None:
        with self._lock:
            self._leases.pop((run_id, node), None)

    def expired_leases(self, now: float, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            return [key for _until, key in sorted((u, k) for k, u in self._leases.items() if u <= now)[:limit]]

    def take_lease(self, run_id: str, node: str, now: float, until: float) -> bool:
        with self._lock:
            held = self._leases.get((run_id, node))
            if held is None or held > now:
                return False
            self._leases[(run_id, node)] = until
            return True

    def beat(self, worker: str, ttl: int, broker: str = "") -> None:
        with self._lock:
            self._beats[worker] = time.monotonic() + ttl
            self._brokers[worker] = broker

    def live_brokers(self) -> set[str]:
        with self._lock:
            now = time.monotonic()
            return {self._brokers[w] for w, until in self._beats.items() if until >= now and self._brokers.get(w)}

    def lost_workers(self, limit: int) -> list[str]:
        with self._lock:
            now = time.monotonic()
            # As on Redis: a worker is known by its beats; one whose last beat ran out and holds steps is lost.
            return [w for w, held in self._held.items() if held and w in self._beats and self._beats[w] < now][:limit]

    def held_steps(self, worker: str) -> list[str]:
        with self._lock:
            return sorted(self._held.get(worker, ()))

    def release(self, worker: str, member: str) -> None:
        with self._lock:
            self._held.get(worker, set()).discard(member)
