"""The coordination store: run records, step envelopes, claims and the run-finished signal.

Two implementations of one ``Protocol``: ``RedisStore`` for real deployments
and ``MemoryStore`` for the embedded default (one process).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..errors import UnknownRun


class CoordinationStore(Protocol):
    """Where workers and clients meet. Every key a run creates expires after ``ttl`` seconds."""

    def create_run(self, run_id: str, fields: Mapping[str, str], ttl: int) -> None: ...

    def run_record(self, run_id: str) -> dict[str, str] | None: ...

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None: ...

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        """The values of some fields of the run (``None`` where unset)."""
        ...

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer field of the run (0 when unset) and return the new value.

        Raises:
            UnknownRun: the run's record is gone (expired); nothing was written.
        """
        ...

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        """Set some fields and read the whole record back, in one round trip."""
        ...

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str]) -> bool:
        """Atomically set ``field`` unless one of the ``guards`` fields is set; True when it was set.

        Raises:
            UnknownRun: the run's record is gone (expired); nothing was written.
        """
        ...

    def claim_and_read(self, run_id: str, field: str, node: str) -> tuple[bool, dict[str, str], dict[int, str]]:
        """``claim`` plus the run record and the block's envelopes, in one round trip."""
        ...

    def claim(self, run_id: str, field: str, value: str = "1") -> bool:
        """Set ``field`` on the run only if unset; True for the one caller that set it."""
        ...

    def claim_and_get(self, run_id: str, field: str, read: str) -> tuple[bool, str | None]:
        """``claim`` and read another field of the run (``None`` where unset), in one round trip."""
        ...

    def record_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool = False) -> int:
        """File one step's envelope under its index; return how many distinct steps are filed.

        With ``keep`` an envelope already filed for that index stays (a duplicate delivery never
        replaces what the step itself reported).
        """
        ...

    def file_step(
        self, run_id: str, node: str, index: int, envelope: str, ttl: int, read: str
    ) -> tuple[int, str | None]:
        """``record_step`` and read one run field (the block's decision) in the same round trip."""
        ...

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]: ...

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        """How many steps of each block have reported (for progress)."""
        ...

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        """Write the final fields and wake every waiter; True when written.

        With ``claim``, only the first caller to set that field of the run writes anything (one step).
        """
        ...

    def push_items(self, run_id: str, name: str, items: Sequence[str], ttl: int) -> None:
        """Append to a named list of the run (a block's ``max_concurrency`` feed)."""
        ...

    def pop_item(self, run_id: str, name: str) -> str | None:
        """Take the first item of a named list of the run, or ``None`` when it is empty."""
        ...

    def wait(self, run_id: str, timeout: float) -> str | None:
        """Block until the run is finished or ``timeout`` passes.

        Returns:
            The run's ``result`` field once it is finished (``""`` if it has none); ``None`` when
            ``timeout`` passed first.
        """
        ...

    def stick(self, scope: str, key: str, owner: str, ttl: int, take_over: bool = False) -> str:
        """The owner of ``key`` in ``scope`` (a sticky pool): ``owner`` when the key had none, or always with
        ``take_over``; each key is forgotten ``ttl`` seconds after it was last used."""
        ...

    def close(self) -> None: ...


def sticky_key(scope: str, key: str) -> str:
    return f"n3:sticky:{scope}:{key}"


def run_key(run_id: str) -> str:
    return f"n3:run:{run_id}"


def steps_key(run_id: str, node: str) -> str:
    return f"n3:run:{run_id}:steps:{node}"


def list_key(run_id: str, name: str) -> str:
    return f"n3:run:{run_id}:list:{name}"


def done_key(run_id: str) -> str:
    return f"n3:run:{run_id}:done"


class MemoryStore:
    """In-process store for the embedded default; keys expire like Redis's."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._runs: dict[str, dict[str, str]] = {}
        self._steps: dict[tuple[str, str], dict[int, str]] = {}
        self._lists: dict[tuple[str, str], deque[str]] = {}
        self._expires: dict[str, float] = {}
        self._sticky: dict[str, tuple[str, float]] = {}  # sticky key -> (owner, when it is forgotten)

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

    def close(self) -> None:
        """Nothing to release: the memory is the process's."""
