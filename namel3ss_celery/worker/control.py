"""Block control: who decides a block, and whether a step may start or must stop.

A block is *decided* once: by its first finisher (race), its first success
(any_success), its first failure under ``fail_fast``, its deadline, or a
cancelled run. The decision is an atomic claim in the coordination store;
steps read it before they start and while they run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ..results import RunStatus
from ..spec import ParallelStrategy
from .store import CoordinationStore

RUN_CANCELLED = "cancelled"


@dataclass(frozen=True)
class Decision:
    """How a block ended before every step reported: its status, the winner (if any) and why."""

    status: RunStatus
    winner: int | None
    reason: str

    def to_json(self) -> str:
        return json.dumps({"status": str(self.status), "winner": self.winner, "reason": self.reason})

    @classmethod
    def from_json(cls, text: str) -> Decision:
        data = json.loads(text)
        return cls(RunStatus(data["status"]), data["winner"], data["reason"])


def decide_after(
    strategy: ParallelStrategy, fail_fast: bool, total: int, filed: int, index: int, key: str, status: str
) -> Decision | None:
    """The decision one step's outcome makes, if any (``filed``: steps reported so far, this one included)."""
    if strategy == ParallelStrategy.RACE:
        won = status == "completed"
        return Decision(RunStatus.COMPLETED if won else RunStatus.FAILED, index, f"step {key!r} finished first")
    if strategy == ParallelStrategy.ANY_SUCCESS:
        if status == "completed":
            return Decision(RunStatus.COMPLETED, index, f"step {key!r} succeeded first")
        if filed >= total:
            return Decision(RunStatus.FAILED, None, "every step failed")
        return None
    if status != "completed" and fail_fast and strategy in (ParallelStrategy.ALL, ParallelStrategy.MAP_REDUCE):
        return Decision(RunStatus.FAILED, None, f"step {key!r} failed (fail_fast)")
    return None


class BlockControl:
    """The control fields of one block of one run."""

    def __init__(self, store: CoordinationStore, run_id: str, node: str, deadline: float | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.node = node
        self.deadline = deadline

    @property
    def decided_field(self) -> str:
        return f"node:{self.node}:decided"

    def decide(self, decision: Decision) -> bool:
        """Record ``decision`` unless another was recorded first; True for the one that won."""
        return self.store.claim(self.run_id, self.decided_field, decision.to_json())

    def decision(self) -> Decision | None:
        (raw,) = self.store.get_fields(self.run_id, [self.decided_field])
        return Decision.from_json(raw) if raw else None

    def stop_requested(self) -> bool:
        """True once the block is decided, its deadline passed or the run cancelled: do not start, or stop."""
        if self.overdue() is not None:
            return True
        decided, cancelled = self.store.get_fields(self.run_id, [self.decided_field, RUN_CANCELLED])
        return bool(decided or cancelled)

    def overdue(self) -> Decision | None:
        """The timeout decision, once the block's deadline has passed."""
        if self.deadline is not None and time.time() >= self.deadline:
            return Decision(RunStatus.TIMEOUT, None, "the block's deadline (timeout_seconds) passed")
        return None

    def start(self, index: int, worker: str, pool: str, pid: int, task_id: str) -> bool:
        """Mark a step started; True when it may run, False when its block is decided or the run cancelled.

        One atomic round trip: a step is marked started only if nothing decided its block first,
        so a decider sees exactly the steps that will run.
        """
        if self.overdue() is not None:
            return False
        info = json.dumps({"worker": worker, "pool": pool, "pid": pid, "task_id": task_id, "start": time.time()})
        field = f"node:{self.node}:started:{index}"
        return self.store.set_unless(self.run_id, field, info, [self.decided_field, RUN_CANCELLED])

    def decision_in(self, record: dict[str, str]) -> Decision | None:
        """The block's decision as a run record holds it."""
        raw = record.get(self.decided_field)
        return Decision.from_json(raw) if raw else None

    def started(self, record: dict[str, str]) -> dict[int, dict[str, object]]:
        """Which steps started, from a run record: index -> worker, pool, pid, task_id."""
        prefix = f"node:{self.node}:started:"
        return {int(k[len(prefix) :]): json.loads(v) for k, v in record.items() if k.startswith(prefix)}
