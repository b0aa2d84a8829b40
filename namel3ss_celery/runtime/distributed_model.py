"""The records of ``namel3ss.runtime.distributed``: task and worker statuses, broker types, a distributed task,
a worker node, and the one encoding a task travels in (as the argument of a Celery task)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import DecodeError, DistributedTaskFailed


class TaskStatus(str, Enum):
    """Where a distributed task is (Namel3ss values; a str-enum, so ``== "completed"`` holds)."""

    PENDING = "pending"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"


class WorkerStatus(str, Enum):
    """What a worker node is doing."""

    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class BrokerType(str, Enum):
    """The message brokers a distributed queue runs on (each a Celery transport)."""

    REDIS = "redis"
    RABBITMQ = "rabbitmq"
    MEMORY = "memory"


# Celery's task states, as the statuses of a distributed task.
CELERY_STATES = {
    "PENDING": TaskStatus.QUEUED,
    "RECEIVED": TaskStatus.ASSIGNED,
    "STARTED": TaskStatus.RUNNING,
    "RETRY": TaskStatus.RETRY,
    "RETRYING": TaskStatus.RETRY,  # tried again on its worker (runtime/queue_task.py)
    "SUCCESS": TaskStatus.COMPLETED,
    "FAILURE": TaskStatus.FAILED,
    "REVOKED": TaskStatus.CANCELLED,
}

FINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


@dataclass
class DistributedTask:
    """One task of a distributed queue: what to run (``task_type``, ``payload``) and what became of it.

    Fields, order and defaults are the Namel3ss ones; ``task_id`` is the Celery task id.
    """

    task_id: str
    task_type: str
    payload: dict[str, Any]
    priority: int = 0
    timeout_seconds: float | None = None
    retry_count: int = 0
    max_retries: int = 3
    created_at: float = field(default_factory=time.time)
    assigned_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    worker_id: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def raise_for_status(self) -> DistributedTask:
        """Return self when completed.

        Raises:
            DistributedTaskFailed: the task failed or was cancelled (its error is in the message).
        """
        if self.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise DistributedTaskFailed(
                f"task {self.task_id} ({self.task_type}) {self.status.value}: {self.error or 'no error recorded'}"
            )
        return self


@dataclass
class WorkerNode:
    """A worker serving a distributed queue: a Celery worker (``worker_id`` is its name)."""

    worker_id: str
    worker_type: str
    capabilities: set[str]
    max_concurrent_tasks: int
    current_tasks: set[str] = field(default_factory=set)
    status: WorkerStatus = WorkerStatus.IDLE
    last_heartbeat: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_available(self) -> bool:
        """Idle, with room for a task, and heard from within the last 30 seconds."""
        return (
            self.status == WorkerStatus.IDLE
            and len(self.current_tasks) < self.max_concurrent_tasks
            and time.time() - self.last_heartbeat < 30
        )

    @property
    def load_percentage(self) -> float:
        """Running tasks as a percentage of ``max_concurrent_tasks``."""
        return len(self.current_tasks) / self.max_concurrent_tasks * 100 if self.max_concurrent_tasks else 100.0


@dataclass
class DistributedExecutionResult:
    """What a batch of distributed tasks did (the Namel3ss record, kept for code that builds it)."""

    execution_id: str
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    pending_tasks: int
    task_results: dict[str, DistributedTask]
    start_time: float
    end_time: float | None = None
    total_duration_ms: float | None = None
    overall_status: str = "running"
    error_message: str | None = None
    worker_usage: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


_SENT = ("task_id", "task_type", "payload", "priority", "timeout_seconds", "max_retries", "created_at", "metadata")


def encode_task(task: DistributedTask, queue_name: str) -> dict[str, Any]:
    """The JSON a task travels in (the one argument of the Celery task ``n3.queue.task``)."""
    return {"queue": queue_name, **{name: getattr(task, name) for name in _SENT}}


def decode_task(data: Any) -> tuple[DistributedTask, str]:
    """The task and its queue name from ``encode_task``'s JSON.

    Raises:
        DecodeError: a field is missing or of the wrong kind (named).
    """
    if not isinstance(data, dict):
        raise DecodeError(f"a distributed task message is a JSON object, not {type(data).__name__}")
    missing = [name for name in ("queue", "task_id", "task_type", "payload") if name not in data]
    if missing:
        raise DecodeError(f"a distributed task message lacks {', '.join(missing)}")
    values = {name: data[name] for name in _SENT if name in data}
    return DistributedTask(**values), str(data["queue"])
