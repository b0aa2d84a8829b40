"""An event, its types and priorities, with the names and defaults of the Namel3ss event runtime."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..engine.values import to_json_data
from ..errors import SpecError, StepResultError
from ..spec.enums import StrEnum


class EventType(StrEnum):
    """What happened. The first seven are Namel3ss's, then the trigger types of its IR, then the adapter's own
    block events (a workflow's nodes: ``block_completed`` for a failed, timed-out or cancelled block too)."""

    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    WORKFLOW_STARTED = "workflow_started"
    WORKFLOW_COMPLETED = "workflow_completed"  # a failed or cancelled run too, with its status in data
    USER_INPUT = "user_input"
    SYSTEM_ALERT = "system_alert"
    CUSTOM = "custom"
    WEBHOOK = "webhook"
    MESSAGE = "message"
    DATASET_CHANGE = "dataset_change"
    SCHEDULE = "schedule"
    MANUAL = "manual"
    BLOCK_STARTED = "block_started"
    BLOCK_COMPLETED = "block_completed"


# What user code may emit (the adapter emits the run's own events itself).
EMITTABLE = frozenset(
    {
        EventType.CUSTOM,
        EventType.WEBHOOK,
        EventType.MESSAGE,
        EventType.DATASET_CHANGE,
        EventType.MANUAL,
        EventType.USER_INPUT,
        EventType.SYSTEM_ALERT,
    }
)


class EventPriority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


def event_type(value: str | EventType, allowed: frozenset[EventType] | None = None) -> EventType:
    """``value`` as an ``EventType``.

    Raises:
        SpecError: an unknown type (Namel3ss turned it into ``custom`` silently; here it is an error), or one
            not in ``allowed`` (path ``event_type``).
    """
    try:
        found = EventType(value)
    except ValueError:
        known = ", ".join(t.value for t in (allowed or EventType))
        raise SpecError(f"unknown event type {value!r}; known: {known}", path="event_type") from None
    if allowed is not None and found not in allowed:
        known = ", ".join(sorted(t.value for t in allowed))
        raise SpecError(
            f"event type {found.value!r} is announced by namel3ss-celery itself; emit one of: {known}",
            path="event_type",
        )
    return found


@dataclass
class Event:
    """One event, built as the Namel3ss runtime builds it (``event_id`` first); ``Event.new`` makes the id.

    ``data`` is JSON data; ``metadata`` carries the adapter's own keys (``depth``: how many triggered runs
    lead to it). ``results``, never sent: after ``emit``, the result (a ``WorkflowResult``) of each run that a
    ``sync`` trigger started, by trigger name.
    """

    event_id: str
    event_type: EventType
    source: str
    data: dict[str, Any]
    timestamp: float = field(default_factory=time.time)
    priority: EventPriority = EventPriority.NORMAL
    correlation_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def new(
        cls,
        event_type: EventType,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: EventPriority = EventPriority.NORMAL,
        correlation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """A new event, with a new id (or ``event_id``)."""
        return cls(
            event_id or uuid.uuid4().hex,
            event_type,
            source,
            dict(data or {}),
            priority=priority,
            correlation_id=correlation_id,
            metadata=dict(metadata or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON data: a copy, whose ``data`` and ``metadata`` the caller may change."""
        return {
            "event_id": self.event_id,
            "event_type": str(self.event_type),
            "source": self.source,
            "data": _copied(self.data),
            "timestamp": self.timestamp,
            "priority": int(self.priority),
            "correlation_id": self.correlation_id,
            "metadata": _copied(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            event_id=str(data.get("event_id") or uuid.uuid4().hex),
            event_type=EventType(data["event_type"]),
            source=str(data.get("source", "")),
            data=dict(data.get("data") or {}),
            timestamp=float(data.get("timestamp") or time.time()),
            priority=EventPriority(int(data.get("priority", EventPriority.NORMAL))),
            correlation_id=data.get("correlation_id"),
            metadata=dict(data.get("metadata") or {}),
        )


def _copied(value: Any) -> Any:
    """A copy of JSON data, every dict and list of it new (``dataclasses.asdict`` at a fraction of its cost)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(v) for v in value]
    return value


def emitted_event(
    kind: str | EventType,
    data: Mapping[str, Any] | None,
    *,
    source: str,
    correlation_id: str | None,
    priority: int,
) -> Event:
    """A new event of a type user code may emit (``EMITTABLE``), its data JSON, its priority 0..3.

    Raises:
        SpecError: an unknown or adapter-only type, data that is not a mapping of JSON data, a bad priority.
    """
    checked = event_type(kind, EMITTABLE)
    if data is not None and not isinstance(data, Mapping):
        raise SpecError(f"an event's data is a mapping of JSON data, not {type(data).__name__}", path="data")
    try:
        payload = to_json_data(dict(data or {}), "the event's data")
    except StepResultError as exc:
        raise SpecError(str(exc), path="data") from exc
    try:
        level = EventPriority(int(priority))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"priority is 0..3 (EventPriority), not {priority!r}", path="priority") from exc
    return Event.new(checked, source, payload, priority=level, correlation_id=correlation_id)
