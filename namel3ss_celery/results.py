"""Result records: plain data, JSON both ways, no I/O.

Field names follow the Namel3ss runtime (``ParallelTaskResult``,
``ParallelExecutionResult``); statuses are str-enums and errors are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import RunCancelled, RunFailed, RunTimedOut
from .spec.enums import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


@dataclass
class ParallelTaskResult:
    """What one step did. ``metadata`` says where it ran (``executed_on``, ``worker``, ``celery_task_id``)."""

    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    duration_ms: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, for JSON; values are shared with this result, not copied."""
        data = _fields(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParallelTaskResult:
        return cls(**{**_known(cls, data), "status": TaskStatus(data["status"])})


@dataclass
class ParallelExecutionResult:
    """What a parallel block did.

    ``final_result`` by strategy: all, ``{step name: result}``; collect,
    ``{step name: {"result" or "error", "status", "duration_ms"}}``;
    map_reduce, the reduced value; race and any_success, the winner's result.
    ``aggregated_output`` is the list of successful results in step order; the Namel3ss runtime API
    (``namel3ss_celery.runtime``) gives it in the Namel3ss shape instead (``runtime.blocks.namel3ss_shaped``).

    The fields are in the Namel3ss runtime's order, with its defaults (``overall_status`` ``pending``),
    so a record built positionally the Namel3ss way means the same here.
    """

    block_name: str
    strategy: str
    total_tasks: int
    completed_tasks: int = 0
    failed_tasks: int = 0
    cancelled_tasks: int = 0
    results: list[ParallelTaskResult] = field(default_factory=list)
    final_result: Any = None
    aggregated_output: Any = None
    start_time: float | None = None
    end_time: float | None = None
    total_duration_ms: float | None = None
    overall_status: RunStatus = RunStatus.PENDING  # in the Namel3ss field order, with its default
    error_message: str | None = None
    max_concurrent: int | None = None
    actual_max_concurrent: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [f"{r.task_id}: {r.error}" for r in self.results if r.error]

    def raise_for_status(self) -> ParallelExecutionResult:
        """Return self when completed; raise ``RunFailed``, ``RunTimedOut`` or ``RunCancelled`` otherwise."""
        _raise_for(self.overall_status, f"block {self.block_name!r}", self.error_message, self.errors)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, for JSON; values are shared with this result, not copied."""
        data = _fields(self)
        data["overall_status"] = str(self.overall_status)
        data["results"] = [r.to_dict() for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParallelExecutionResult:
        values = _known(cls, data)
        values["overall_status"] = RunStatus(data["overall_status"])
        values["results"] = [ParallelTaskResult.from_dict(r) for r in data.get("results", [])]
        return cls(**values)


@dataclass
class WorkflowResult:
    """What a workflow or program run did: one result per block, each node's output."""

    run_id: str
    name: str
    overall_status: RunStatus
    blocks: dict[str, ParallelExecutionResult] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    final_result: Any = None
    failed_node: str | None = None
    error_message: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    total_duration_ms: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def raise_for_status(self) -> WorkflowResult:
        """Return self when completed; raise ``RunFailed``, ``RunTimedOut`` or ``RunCancelled`` otherwise."""
        errors = [e for b in self.blocks.values() for e in b.errors]
        _raise_for(self.overall_status, f"workflow {self.name!r}", self.error_message, errors)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, for JSON; values are shared with this result, not copied."""
        data = _fields(self)
        data["overall_status"] = str(self.overall_status)
        data["blocks"] = {k: b.to_dict() for k, b in self.blocks.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowResult:
        values = _known(cls, data)
        values["overall_status"] = RunStatus(data["overall_status"])
        values["blocks"] = {k: ParallelExecutionResult.from_dict(b) for k, b in data.get("blocks", {}).items()}
        return cls(**values)


RunResult = ParallelExecutionResult | WorkflowResult


def result_from_dict(data: dict[str, Any]) -> RunResult:
    """The record's own kind: a workflow result has ``run_id`` and ``blocks``."""
    if "blocks" in data:
        return WorkflowResult.from_dict(data)
    return ParallelExecutionResult.from_dict(data)


def _raise_for(status: RunStatus, what: str, message: str | None, errors: list[str]) -> None:
    if status == RunStatus.COMPLETED:
        return
    text = f"{what} {status}" + (f": {message}" if message else "")
    if status == RunStatus.TIMEOUT:
        raise RunTimedOut(text, errors)
    if status == RunStatus.CANCELLED:
        raise RunCancelled(text, errors)
    raise RunFailed(text, errors)


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """The field names of dataclass ``cls``, read once."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = _names(cls)
    return {k: v for k, v in data.items() if k in names}


def _fields(result: Any) -> dict[str, Any]:
    """A dataclass's fields, one level deep (``dataclasses.asdict`` deep-copies every step result)."""
    return {name: getattr(result, name) for name in _names(type(result))}
