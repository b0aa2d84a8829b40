"""What a step files: the envelope its block's settle reads from the coordination store.

One frozen dataclass with one ``encode`` (a JSON string) and one ``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import DecodeError
from ..results import TaskStatus
from .kinds import Outcome


@dataclass(slots=True)
class Envelope:
    """What one step filed in the coordination store, for its block's settle to read. Treat it as a value:
    nothing changes one once made (not ``frozen``: a frozen dataclass takes eight times as long to make, and
    a block run inline makes one per step)."""

    key: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    start: float | None = None
    end: float | None = None
    worker: str = ""
    task_id: str = ""
    outcome: Outcome | None = None
    executed_on: str | None = None  # "local" for a step its publisher ran itself (fallback_to_local)
    attempts: int = 1  # how many times it was tried: 1, or more when it was retried
    dead_letter: str | None = None  # the dead-letter queue its message went to, failing for good

    def encode(self) -> str:
        data: dict[str, Any] = {
            "key": self.key,
            "status": str(self.status),
            "result": self.result,
            "error": self.error,
            "start": self.start,
            "end": self.end,
            "worker": self.worker,
            "task_id": self.task_id,
            "outcome": str(self.outcome) if self.outcome is not None else None,
        }
        if self.executed_on:
            data["executed_on"] = self.executed_on
        if self.attempts != 1:
            data["attempts"] = self.attempts
        if self.dead_letter:
            data["dead_letter"] = self.dead_letter
        return json.dumps(data)

    @classmethod
    def decode(cls, text: str) -> Envelope:
        """Read a filed envelope.

        Raises:
            DecodeError: not an envelope this version wrote.
        """
        try:
            data = json.loads(text)
            outcome = data.get("outcome")
            return cls(
                key=str(data["key"]),
                status=TaskStatus(data["status"]),
                result=data.get("result"),
                error=data.get("error"),
                start=data.get("start"),
                end=data.get("end"),
                worker=str(data.get("worker") or ""),
                task_id=str(data.get("task_id") or ""),
                outcome=Outcome(outcome) if outcome else None,
                executed_on=data.get("executed_on"),
                attempts=int(data.get("attempts", 1)),
                dead_letter=data.get("dead_letter") or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"a filed step envelope cannot be read: {exc!r}") from exc
