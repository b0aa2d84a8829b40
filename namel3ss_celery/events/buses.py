"""The event buses and handlers of the Namel3ss event API (``events.executor``): where its events go, and
who is called for which."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import Event, EventType, event_type


class EventBus:
    """Where an ``EventDrivenExecutor``'s events go: a Celery app's stream. ``MemoryEventBus`` is the embedded
    default (this process); ``RedisEventBus(redis_url)`` a deployment on that Redis."""

    def __init__(self, n3: Any = None) -> None:
        self.n3 = n3


class MemoryEventBus(EventBus):
    """The embedded default: an in-process Celery worker, events in this process's memory."""


class RedisEventBus(EventBus):
    """A deployment on Redis (broker, results, coordination and events), as ``redis_url`` names it."""

    def __init__(self, redis_url: str = "redis://localhost:6379") -> None:
        super().__init__()
        self.redis_url = redis_url


@dataclass
class EventHandler:
    """A handler registered in this process."""

    handler_id: str
    event_types: set[EventType]
    handler_func: Callable[[Event], Any]
    priority: int = 0
    filters: dict[str, Any] = field(default_factory=dict)
    active: bool = True

    def matches(self, event: Event) -> bool:
        """Its types, and each filter equal to the event's data field (else its metadata field), as Namel3ss."""
        if not self.active or event.event_type not in self.event_types:
            return False
        for key, wanted in self.filters.items():
            source = event.data if key in event.data else event.metadata
            if key not in source or source[key] != wanted:
                return False
        return True


def parse_types(kinds: Iterable[EventType | str] | EventType | str) -> set[EventType]:
    """Each of ``kinds`` as an ``EventType`` (an unknown one is an error, not ``custom``); one type given
    alone (``"task_completed"``, as the Namel3ss guides write it) is that type, not its characters.

    Raises:
        SpecError: an unknown type.
    """
    if isinstance(kinds, str):
        return {event_type(kinds)}
    return {event_type(kind) for kind in kinds}
