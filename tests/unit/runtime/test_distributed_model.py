"""The records of the distributed queue keep the Namel3ss names, values, field order and defaults."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from namel3ss_celery.errors import DecodeError, DistributedTaskFailed
from namel3ss_celery.runtime import (
    BrokerType,
    DistributedExecutionResult,
    DistributedTask,
    ParallelExecutionContext,
    TaskStatus,
    WorkerNode,
    WorkerStatus,
)
from namel3ss_celery.runtime.distributed_model import decode_task, encode_task


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (TaskStatus, ["pending", "queued", "assigned", "running", "completed", "failed", "cancelled", "retry"]),
        (WorkerStatus, ["idle", "busy", "offline", "maintenance"]),
        (BrokerType, ["redis", "rabbitmq", "memory"]),
    ],
)
def test_enum_values_are_the_namel3ss_ones(enum: Any, values: list[str]) -> None:
    assert [member.value for member in enum] == values
    assert [member.name for member in enum] == [v.upper() for v in values]
    assert enum(values[0]) == values[0]  # str-enums: compare equal to their values


def field_table(cls: Any) -> list[tuple[str, Any]]:
    """(name, default) per field, in order; a default factory is called."""
    table = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            table.append((f.name, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            table.append((f.name, "now" if isinstance(made, float) else made))
        else:
            table.append((f.name, "required"))
    return table


@pytest.mark.parametrize(
    ("cls", "table"),
    [
        (
            DistributedTask,
            [
                ("task_id", "required"),
                ("task_type", "required"),
                ("payload", "required"),
                ("priority", 0),
                ("timeout_seconds", None),
                ("retry_count", 0),
                ("max_retries", 3),
                ("created_at", "now"),
                ("assigned_at", None),
                ("started_at", None),
                ("completed_at", None),
                ("worker_id", None),
                ("status", TaskStatus.PENDING),
                ("result", None),
                ("error", None),
                ("metadata", {}),
            ],
        ),
        (
            WorkerNode,
            [
                ("worker_id", "required"),
                ("worker_type", "required"),
                ("capabilities", "required"),
                ("max_concurrent_tasks", "required"),
                ("current_tasks", set()),
                ("status", WorkerStatus.IDLE),
                ("last_heartbeat", "now"),
                ("metadata", {}),
            ],
        ),
        (
            DistributedExecutionResult,
            [
                ("execution_id", "required"),
                ("total_tasks", "required"),
                ("completed_tasks", "required"),
                ("failed_tasks", "required"),
                ("cancelled_tasks", "required"),
                ("pending_tasks", "required"),
                ("task_results", "required"),
                ("start_time", "required"),
                ("end_time", None),
                ("total_duration_ms", None),
                ("overall_status", "running"),
                ("error_message", None),
                ("worker_usage", {}),
                ("metadata", {}),
            ],
        ),
        (
            ParallelExecutionContext,
            [
                ("execution_id", "required"),
                ("block_name", "required"),
                ("strategy", "required"),
                ("max_concurrency", "required"),
                ("timeout_seconds", None),
                ("parent_span_id", None),
                ("semaphore", None),
                ("cancel_event", None),
                ("running_tasks", set()),
                ("completed_tasks", {}),
                ("current_concurrency", 0),
                ("execution_permissions", None),
                ("allowed_capabilities", set()),
                ("trace_context", {}),
                ("custom_metadata", {}),
            ],
        ),
    ],
)
def test_records_keep_the_namel3ss_fields_in_order_with_their_defaults(cls: Any, table: list[Any]) -> None:
    assert field_table(cls) == table


def test_a_task_builds_positionally_the_namel3ss_way() -> None:
    task = DistributedTask("t1", "resize", {"path": "a.png"}, 5, 30.0)
    assert (task.priority, task.timeout_seconds, task.status) == (5, 30.0, TaskStatus.PENDING)
    assert abs(task.created_at - time.time()) < 60


def test_worker_availability_and_load() -> None:
    worker = WorkerNode("w1", "resizer", {"resize"}, 2)
    assert worker.is_available and worker.load_percentage == 0.0
    worker.current_tasks = {"a", "b"}
    assert not worker.is_available and worker.load_percentage == 100.0
    worker.current_tasks = set()
    worker.last_heartbeat = time.time() - 31
    assert not worker.is_available
    worker.last_heartbeat = time.time()
    worker.status = WorkerStatus.OFFLINE
    assert not worker.is_available


def test_a_task_travels_as_json_and_comes_back_the_same() -> None:
    task = DistributedTask("t1", "resize", {"path": "a.png"}, priority=3, timeout_seconds=2.0, metadata={"k": 1})
    again, queue = decode_task(encode_task(task, "images"))
    assert queue == "images"
    for name in ("task_id", "task_type", "payload", "priority", "timeout_seconds", "max_retries", "created_at"):
        assert getattr(again, name) == getattr(task, name)
    assert again.metadata == {"k": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["not", "a", "dict"], "JSON object, not list"),
        ({"queue": "q", "task_id": "t"}, "lacks task_type, payload"),
    ],
)
def test_a_malformed_task_message_is_refused_by_name(data: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_task(data)


def test_raise_for_status_names_the_task_and_its_error() -> None:
    done = DistributedTask("t1", "resize", {}, status=TaskStatus.COMPLETED, result=1)
    assert done.raise_for_status() is done
    failed = DistributedTask("t2", "resize", {}, status=TaskStatus.FAILED, error="ValueError: no file")
    with pytest.raises(DistributedTaskFailed, match=r"task t2 \(resize\) failed: ValueError: no file"):
        failed.raise_for_status()
