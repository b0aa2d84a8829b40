"""The coordination store: run records, step envelopes, claims and the run-finished signal.

Two implementations of one ``Protocol``: ``RedisStore`` for real deployments
and ``MemoryStore`` for the embedded default (one process).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..engine.ports import CoordinationStore, Held, Lease
from ..errors import UnknownRun
from ..plan.fields import done_key, list_key, run_key, steps_key, sticky_key
from .memory_watched import MemoryWatched

# The Protocol both stores follow and the key helpers are re-exported from here.
__all__ = ["CoordinationStore", "MemoryStore", "done_key", "list_key", "run_key", "steps_key", "sticky_key"]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@dataclass
class _Expiring(Generic[_V]):
    """A value and when it is forgotten (``time.monotonic()``), as Redis keeps a key and its expiry."""

    value: _V
    until: float


def _alive(table: dict[_K, _Expiring[_V]], key: _K) -> _Expiring[_V] | None:
    """The entry under ``key`` unless it expired (then it is dropped)."""
    entry = table.get(key)
    if entry is not None and entry.until < time.monotonic():
        del table[key]
        return None
    return entry


def _sweep(table: dict[_K, _Expiring[_V]]) -> None:
    """Drop every expired entry of ``table``."""
    now = time.monotonic()
    for key in [k for k, entry in table.items() if entry.until < now]:
        del table[key]


class MemoryStore(MemoryWatched):
    """In-process store for the embedded default; keys expire like Redis's.

    It keeps the contract ``RedisStore`` keeps: a write to a run whose record is gone (expired, or never
    created) writes nothing. A claim on it is not won, ``finish`` returns False, and the other writes
    raise ``UnknownRun``. A run's step envelopes and lists expire in their own ``ttl``, or with the run's
    record if that is sooner.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._runs: dict[str, _Expiring[dict[str, str]]] = {}
        self._steps: dict[tuple[str, str], _Expiring[dict[int, str]]] = {}  # (run id, node) -> envelopes
        self._lists: dict[tuple[str, str], _Expiring[deque[str]]] = {}  # (run id, name) -> items
        self._sticky: dict[str, tuple[str, float]] = {}  # sticky key -> (owner, when it is forgotten)
        self._deadlines: dict[tuple[str, str], float] = {}  # (run, node) -> when its block must be decided
        self._leases: dict[tuple[str, str], float] = {}  # (run, node) -> until when its launch or settle is held
        self._held: dict[str, set[str]] = {}  # worker -> the steps it runs
        self._beats: dict[str, float] = {}  # worker -> until when its heartbeat counts
        self._brokers: dict[str, str] = {}  # worker -> its broker

    def _run(self, run_id: str) -> _Expiring[dict[str, str]] | None:
        return _alive(self._runs, run_id)

    def _live(self, run_id: str) -> dict[str, str] | None:
        run = self._run(run_id)
        return run.value if run is not None else None

    def _existing(self, run_id: str) -> _Expiring[dict[str, str]]:
        run = self._run(run_id)
        if run is None:
            raise UnknownRun(run_id)  # writing now would make a record that never expires
        return run

    def _sweep(self) -> None:
        """Drop every expired key (as Redis does in the background)."""
        _sweep(self._runs)
        _sweep(self._steps)
        _sweep(self._lists)

    def create_run(
        self, run_id: str, fields: Mapping[str, str], ttl: int, leases: Sequence[Lease] = (), first_event: str = ""
    ) -> bool:
        with self._lock:
            self._sweep()
            self._runs[run_id] = _Expiring(dict(fields), time.monotonic() + ttl)
            self._leases.update({(run_id, lease.node): lease.until for lease in leases})
        return False  # this process's events are the event service's own (events.stream.MemoryEventStore)

    def run_record(self, run_id: str) -> dict[str, str] | None:
        with self._lock:
            record = self._live(run_id)
            return dict(record) if record is not None else None

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        with self._lock:
            self._existing(run_id).value.update(fields)

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        with self._lock:
            record = self._live(run_id) or {}
            return [record.get(f) for f in fields]

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        with self._lock:
            record = self._existing(run_id).value
            value = int(record.get(field, "0")) + amount
            record[field] = str(value)
            return value

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        with self._lock:
            record = self._existing(run_id).value
            record.update(fields)
            return dict(record)

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str], held: Held | None = None) -> bool:
        with self._lock:
            live = self._live(run_id)
            if live is None or any(g in live for g in guards):
                if held is not None:  # held before its start guard (take_step): not held once refused
                    self._held.get(held.worker, set()).discard(held.member)
                if live is None:
                    raise UnknownRun(run_id)
                return False
            live[field] = value
            if held is not None:
                self._held.setdefault(held.worker, set()).add(held.member)
            return True

    def take_step(
        self, run_id: str, node: str, index: int, held: Held, guards: Sequence[str], passed: tuple[str, str]
    ) -> bool:
        with self._lock:
            live = self._live(run_id)
            filed = _alive(self._steps, (run_id, node))
            if live is None or any(g in live for g in guards) or (filed is not None and index in filed.value):
                return False
            if passed[1] in live.get(passed[0], ""):
                return False
            self._held.setdefault(held.worker, set()).add(held.member)
            return True

    def claim_and_read(
        self, run_id: str, field: str, node: str, lease: Lease | None = None
    ) -> tuple[bool, dict[str, str], dict[int, str]]:
        with self._lock:
            claimed = self.claim(run_id, field, lease=lease)
            return claimed, dict(self._live(run_id) or {}), self.step_envelopes(run_id, node)

    def claim(self, run_id: str, field: str, value: str = "1", lease: Lease | None = None) -> bool:
        with self._lock:
            record = self._live(run_id)
            if record is None or field in record:
                return False
            record[field] = value
            if lease is not None:
                self._leases[(run_id, lease.node)] = lease.until
            return True

    def claim_and_get(self, run_id: str, field: str, read: str, lease: Lease | None = None) -> tuple[bool, str | None]:
        with self._lock:
            return self.claim(run_id, field, lease=lease), (self._live(run_id) or {}).get(read)

    def stick(self, scope: str, key: str, owner: str, ttl: int, take_over: bool = False) -> str:
        with self._lock:
            now = time.monotonic()
            name = sticky_key(scope, key)
            current = self._sticky.get(name)
            if take_over or current is None or current[1] < now:
                current = (owner, 0.0)
            self._sticky[name] = (current[0], now + ttl)
            return current[0]

    def _until(self, run: _Expiring[dict[str, str]], ttl: int) -> float:
        """When a key of ``run`` written now with ``ttl`` expires: then, or with the run if that is sooner."""
        return min(time.monotonic() + ttl, run.until)

    def record_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool = False) -> int:
        return self._record(run_id, node, index, envelope, ttl, keep)[0]

    def add_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int) -> tuple[int, bool]:
        return self._record(run_id, node, index, envelope, ttl, keep=True)

    def _record(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool) -> tuple[int, bool]:
        with self._lock:
            run = self._existing(run_id)
            filed = _alive(self._steps, (run_id, node))
            if filed is None:
                filed = self._steps[(run_id, node)] = _Expiring({}, 0.0)
            wrote = not (keep and index in filed.value) or filed.value[index] == envelope  # as RECORD_STEP
            if wrote:
                filed.value[index] = envelope
            run.until = max(run.until, time.monotonic() + ttl)  # a run lives on while its steps report
            filed.until = self._until(run, ttl)
            return len(filed.value), wrote

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
        with self._lock:
            filed = self.record_step(run_id, node, index, envelope, ttl), self._existing(run_id).value.get(read)
            if held is not None:
                self.release(held.worker, held.member)
            return filed

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]:
        with self._lock:
            filed = _alive(self._steps, (run_id, node))
            return dict(filed.value) if filed is not None else {}

    def push_items(
        self, run_id: str, name: str, items: Sequence[str], ttl: int, mark: tuple[str, str] | None = None
    ) -> None:
        with self._lock:
            if not items and mark is None:
                return  # nothing to write (as on Redis, where this costs no round trip)
            run = self._existing(run_id)
            if mark is not None:
                run.value[mark[0]] = mark[1]
            if not items:
                return
            listed = _alive(self._lists, (run_id, name))
            if listed is None:
                listed = self._lists[(run_id, name)] = _Expiring(deque(), 0.0)
            listed.value.extend(items)
            listed.until = self._until(run, ttl)

    def pop_item(self, run_id: str, name: str) -> str | None:
        with self._lock:
            listed = _alive(self._lists, (run_id, name))
            if listed is None:
                return None
            item = listed.value.popleft()
            if not listed.value:
                del self._lists[(run_id, name)]  # an emptied list is gone, as in Redis
            return item

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        with self._lock:
            counts = {}
            for node in nodes:
                filed = _alive(self._steps, (run_id, node))
                counts[node] = len(filed.value) if filed is not None else 0
            return counts

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        with self._lock:
            run = self._run(run_id)
            if run is None:
                return False  # a run whose record expired cannot be finished
            if claim is not None and not self.claim(run_id, claim):
                return False
            run.value.update(fields)
            run.value["done"] = "1"
            run.until = time.monotonic() + ttl
            self._lock.notify_all()
            return True

    def wait(self, run_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                record = self._live(run_id)
                if record is not None and record.get("done") == "1":
                    return record.get("result", "")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)

    def close(self) -> None:
        """Nothing to release: the memory is the process's."""
