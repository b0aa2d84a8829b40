"""What every runtime schedule store shares (RedBeat entries in Redis, django-celery-beat's tables): the
record of a schedule, the checks of ``add``, the protocol ``n3.schedules`` answers to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import SpecError
from ..spec import ProgramSpec
from .schedules import CRON, INTERVAL, TIMEZONE, parse_schedule


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule kept by the runtime store (Redis, or the database)."""

    name: str
    target: str
    config: dict[str, Any]  # cron (and timezone), or interval_seconds
    context: dict[str, Any]
    enabled: bool


class RuntimeSchedules(Protocol):
    """Add, change, remove and list schedules at runtime, whatever keeps them."""

    def add(
        self,
        name: str,
        target: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        interval_seconds: float | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> ScheduleInfo: ...

    def remove(self, name: str) -> bool: ...

    def get(self, name: str) -> ScheduleInfo | None: ...

    def list(self) -> list[ScheduleInfo]: ...


def checked_schedule(
    name: object,
    target: str,
    program: ProgramSpec | None,
    cron: str | None,
    timezone: str | None,
    interval_seconds: float | None,
) -> dict[str, Any]:
    """The ``source_config`` of a schedule given to ``add``, checked.

    Raises:
        SpecError: a bad name, cron line, time zone or interval, or a target ``program`` does not have,
            naming the argument.
    """
    if not isinstance(name, str) or not name:
        raise SpecError(f"a schedule's name is a non-empty string, not {name!r}", path="name")
    config = {CRON: cron, TIMEZONE: timezone, INTERVAL: interval_seconds}
    checked = parse_schedule({k: v for k, v in config.items() if v is not None}, "schedule").config()
    if program is not None:
        nodes = {w.name for w in program.workflows} | {b.name for b in program.parallel_blocks}
        if target not in nodes:
            raise SpecError(
                f"{target!r} is neither a workflow nor a parallel block of the program "
                f"({', '.join(sorted(nodes)) or 'none'})",
                path="target",
            )
    return checked
