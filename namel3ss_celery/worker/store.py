"""The coordination store: run records, step envelopes, claims and the run-finished signal.

Two implementations of one ``Protocol``: ``RedisStore`` for real deployments
and ``MemoryStore`` for the embedded default (one process).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from ..engine.ports import CoordinationStore  # noqa: F401 - the Protocol both stores follow, re-exported
from ..errors import UnknownRun
from ..plan.fields import done_key, list_key, run_key, steps_key, sticky_key  # noqa: F401 - re-exported


class MemoryStore:
    """In-process store for the embedded default; keys expire like Redis's."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._runs: dict[str, dict[str, str]] = {}
        self._steps: dict[tuple[str, str], dict[int, str]] = {}
        self._lists: dict[tuple[str, str], deque[str]] = {}
        self._expires: dict[str, float] = {}
        self._sticky: dict[str, tuple[str, float]] = {}  # sticky key -> (owner, when it is forgotten)
        self._deadlines: dict[tuple[str, str], float] = {}  # (run, node) -> when its block must be decided

    def _live(self, run_id: str) -> dict[str, str] | None:
        expires = self._expires.get(run_id)
        if expires is not None and expires < time.monotonic():
            self._runs.pop(run_id, None)
            self._expires.pop(run_id, None)
            for key in [k for k in self._steps if k[0] == run_id]:
                del self._steps[key]
            for key in [k for k in self._lists if k[0] == run_id]:
                del self._lists[key]
        return self._runs.get(run_id)

    def create_run(self, run_id: str, fields: Mapping[str, str], ttl: int) -> None:
        with self._lock:
            for expired in [r for r, at in self._expires.items() if at < time.monotonic()]:
                self._live(expired)  # drops it
            self._runs[run_id] = dict(fields)
            self._expires[run_id] = time.monotonic() + ttl

    def run_record(self, run_id: str) -> dict[str, str] | None:
        with self._lock:
            record = self._live(run_id)
            return dict(record) if record is not None else None

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        with self._lock:
            self._runs.setdefault(run_id, {}).update(fields)

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        with self._lock:
            record = self._runs.get(run_id, {})
            return [record.get(f) for f in fields]

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        with self._lock:
            record = self._live(run_id)
            if record is None:
                raise UnknownRun(run_id)
            value = int(record.get(field, "0")) + amount
            record[field] = str(value)
            return value

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        with self._lock:
            self.set_fields(run_id, fields)
            return dict(self._runs.get(run_id, {}))

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str]) -> bool:
        with self._lock:
            record = self._live(run_id)
            if record is None:
                raise UnknownRun(run_id)
            if any(g in record for g in guards):
                return False
            record[field] = value
            return True

    def claim_and_read(self, run_id: str, field: str, node: str) -> tuple[bool, dict[str, str], dict[int, str]]:
        with self._lock:
            claimed = self.claim(run_id, field)
            return claimed, dict(self._runs.get(run_id, {})), self.step_envelopes(run_id, node)

    def claim(self, run_id: str, field: str, value: str = "1") -> bool:
        with self._lock:
            record = self._runs.setdefault(run_id, {})
            if field in record:
                return False
            record[field] = value
            return True

    def claim_and_get(self, run_id: str, field: str, read: str) -> tuple[bool, str | None]:
        with self._lock:
            return self.claim(run_id, field), self._runs.get(run_id, {}).get(read)

    def stick(self, scope: str, key: str, owner: str, ttl: int, take_over: bool = False) -> str:
        with self._lock:
            now = time.monotonic()
            name = sticky_key(scope, key)
            current = self._sticky.get(name)
            if take_over or current is None or current[1] < now:
                current = (owner, 0.0)
            self._sticky[name] = (current[0], now + ttl)
            return current[0]

    def record_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool = False) -> int:
        with self._lock:
            filed = self._steps.setdefault((run_id, node), {})
            if not (keep and index in filed):
                filed[index] = envelope
            return len(filed)

    def file_step(
        self, run_id: str, node: str, index: int, envelope: str, ttl: int, read: str
    ) -> tuple[int, str | None]:
        with self._lock:
            return self.record_step(run_id, node, index, envelope, ttl), self._runs.get(run_id, {}).get(read)

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]:
        with self._lock:
            return dict(self._steps.get((run_id, node), {}))

    def push_items(self, run_id: str, name: str, items: Sequence[str], ttl: int) -> None:
        with self._lock:
            self._lists.setdefault((run_id, name), deque()).extend(items)

    def pop_item(self, run_id: str, name: str) -> str | None:
        with self._lock:
            items = self._lists.get((run_id, name))
            return items.popleft() if items else None

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {node: len(self._steps.get((run_id, node), {})) for node in nodes}

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        with self._lock:
            if claim is not None and not self.claim(run_id, claim):
                return False
            self._runs.setdefault(run_id, {}).update(fields)
            self._runs[run_id]["done"] = "1"
            self._expires[run_id] = time.monotonic() + ttl
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

    def add_deadline(self, run_id: str, node: str, at: float, ttl: int) -> None:
        with self._lock:
            self._deadlines[(run_id, node)] = at

    def due_deadlines(self, now: float, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            due = sorted((at, key) for key, at in self._deadlines.items() if at <= now)
            return [key for _at, key in due[:limit]]

    def drop_deadline(self, run_id: str, node: str) -> None:
        with self._lock:
            self._deadlines.pop((run_id, node), None)

    def close(self) -> None:
        """Nothing to release: the memory is the process's."""
