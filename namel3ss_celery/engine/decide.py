"""Who decides a block: pure rules, no I/O.

A block is *decided* once: by its first finisher (race), its first success
(any_success), its first failure under ``fail_fast``, its deadline, or a
cancelled run. ``control.BlockControl`` records the decision atomically; the
rules of what decides are here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import DecodeError
from ..results import RunStatus, TaskStatus
from ..spec import ParallelStrategy

DEADLINE_PASSED = "the block's deadline (timeout_seconds) passed"
RUN_CANCELLED = "run cancelled"
NOT_STARTED = "not started: its block was already decided"


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
        """Read a recorded decision.

        Raises:
            DecodeError: not a decision this version wrote.
        """
        try:
            data = json.loads(text)
            return cls(RunStatus(data["status"]), data["winner"], data["reason"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"a block decision cannot be read: {exc!r}") from exc


TIMED_OUT = Decision(RunStatus.TIMEOUT, None, DEADLINE_PASSED)
CANCELLED = Decision(RunStatus.CANCELLED, None, RUN_CANCELLED)


def decide_after(
    strategy: ParallelStrategy, *, fail_fast: bool, total: int, filed: int, index: int, key: str, status: TaskStatus
) -> Decision | None:
    """The decision one step's outcome makes, if any.

    Args:
        strategy: the block's strategy.
        fail_fast: the block's ``fail_fast``.
        total: steps in the block.
        filed: steps reported so far, this one included.
        index: this step's index; ``key`` its name in results.
        status: this step's status.
    """
    if strategy == ParallelStrategy.RACE:
        won = status == TaskStatus.COMPLETED
        return Decision(RunStatus.COMPLETED if won else RunStatus.FAILED, index, f"step {key!r} finished first")
    if strategy == ParallelStrategy.ANY_SUCCESS:
        if status == TaskStatus.COMPLETED:
            return Decision(RunStatus.COMPLETED, index, f"step {key!r} succeeded first")
        if filed >= total:
            return Decision(RunStatus.FAILED, None, "every step failed")
        return None
    if status != TaskStatus.COMPLETED and fail_fast and strategy in (ParallelStrategy.ALL, ParallelStrategy.MAP_REDUCE):
        return Decision(RunStatus.FAILED, None, f"step {key!r} failed (fail_fast)")
    return None
