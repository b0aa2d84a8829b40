"""Schedules: a trigger with ``event_type: schedule`` and a ``source_config`` of ``{cron, timezone}`` or
``{interval_seconds}``, checked when its program loads, and the beat schedules it becomes.

Every firing belongs to a time slot, the same for every beat that fires it: for cron, the scheduled minute;
for an interval, a multiple of ``interval_seconds`` since the epoch (``AlignedInterval`` fires at those
boundaries, so two beats started at different moments fire at the same ones). The task that fires claims
(trigger, slot) in the coordination store, so two beats never start a run twice for one slot. A slot is
named by the clock of the beat that fires it, the clock that decided it was due (why not the store's:
``beat``'s docstring).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab, schedstate, schedule

from ..errors import SpecError
from ..spec import ProgramSpec
from ..spec.limits import MAX_DURATION_SECONDS

SCHEDULE_TYPE = "schedule"
CRON, TIMEZONE, INTERVAL = "cron", "timezone", "interval_seconds"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")  # the order of a crontab line
SKEW = 1.0  # seconds a beat's clock may run ahead of another's and still name the same slot
CLAIM_SLOTS = 3  # a slot's claim outlives this many slots (at least CLAIM_MIN seconds)
CLAIM_MIN = 60


@dataclass(frozen=True)
class Schedule:
    """When a schedule fires: a cron line (in ``timezone``, else the app's) or every ``interval_seconds``."""

    cron: str | None = None
    timezone: str | None = None
    interval_seconds: float | None = None

    def config(self) -> dict[str, Any]:
        """As a trigger's ``source_config``."""
        found: dict[str, Any] = {CRON: self.cron, TIMEZONE: self.timezone, INTERVAL: self.interval_seconds}
        return {key: value for key, value in found.items() if value is not None}

    @property
    def slot_seconds(self) -> float:
        """How long one slot is: the interval, or a minute for cron."""
        return self.interval_seconds if self.interval_seconds is not None else 60.0

    def slot(self, fired_at: float) -> int:
        """The slot a firing at ``fired_at`` (epoch seconds, the beat's clock) belongs to: the start of the
        slot in epoch seconds for cron (its minute), the slot's number for an interval. A beat fires at (or
        just after) the start of a slot; a clock up to ``SKEW`` seconds ahead still names it."""
        length = self.slot_seconds
        number = math.floor((fired_at + min(SKEW, length / 4)) / length)
        return number * 60 if self.cron is not None else number

    def slot_start(self, slot: int) -> float:
        """When ``slot`` begins, in epoch seconds."""
        return float(slot) if self.cron is not None else slot * self.slot_seconds

    @property
    def claim_ttl(self) -> int:
        """Seconds a slot's claim is kept: long enough for a second beat's message to find it."""
        return max(CLAIM_MIN, math.ceil(self.slot_seconds * CLAIM_SLOTS))

    def celery_schedule(self, app: Any = None) -> schedule | crontab:
        """The Celery schedule beat runs: a ``ZonedCrontab`` or an ``AlignedInterval``."""
        if self.cron is not None:
            fields = dict(zip(CRON_FIELDS, self.cron.split(), strict=True))
            return ZonedCrontab(timezone=self.timezone, app=app, **fields)
        assert self.interval_seconds is not None
        return AlignedInterval(self.interval_seconds, app=app)


def parse_schedule(config: Mapping[str, Any], path: str = "source_config") -> Schedule:
    """A schedule's ``source_config``, checked.

    Raises:
        SpecError: naming the field (``<path>.cron``, ``<path>.timezone``, ``<path>.interval_seconds``): an
            unknown key, neither or both of cron and interval_seconds, a cron line that is not five valid
            fields, an unknown time zone, an interval that is not a positive number of seconds.
    """
    if not isinstance(config, Mapping):
        raise SpecError(f"a schedule's source_config is a mapping, not {type(config).__name__}", path=path)
    unknown = sorted(set(config) - {CRON, TIMEZONE, INTERVAL})
    if unknown:
        raise SpecError(
            f"a schedule takes cron (with an optional timezone) or interval_seconds, not {unknown[0]!r}",
            path=f"{path}.{unknown[0]}",
        )
    cron, zone, interval = config.get(CRON), config.get(TIMEZONE), config.get(INTERVAL)
    if (cron is None) == (interval is None):
        where = f"{path}.{CRON}" if cron is not None else path
        raise SpecError("a schedule has exactly one of cron and interval_seconds", path=where)
    if interval is not None:
        if zone is not None:
            raise SpecError("timezone goes with cron; an interval has none", path=f"{path}.{TIMEZONE}")
        return Schedule(interval_seconds=_interval(interval, f"{path}.{INTERVAL}"))
    _check_cron(cron, f"{path}.{CRON}")
    if zone is not None:
        _check_zone(zone, f"{path}.{TIMEZONE}")
    return Schedule(cron=" ".join(str(cron).split()), timezone=zone)


def _interval(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"a number of seconds, not {value!r}", path=path)
    if not 0 < value <= MAX_DURATION_SECONDS:
        raise SpecError(f"more than 0 and at most {MAX_DURATION_SECONDS:g} seconds, not {value!r}", path=path)
    return float(value)


def _check_cron(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise SpecError(f'a cron line of five fields ("*/5 * * * *"), not {value!r}', path=path)
    parts = value.split()
    if len(parts) != len(CRON_FIELDS):
        raise SpecError(
            f"a cron line has five fields ({' '.join(CRON_FIELDS)}), not {len(parts)}: {value!r}", path=path
        )
    for name, part in zip(CRON_FIELDS, parts, strict=True):
        try:
            crontab(**{name: part})
        except (ValueError, TypeError, IndexError) as exc:  # crontab's parser says ValueError, or worse
            raise SpecError(f"its {name} field {part!r} is not valid: {exc}", path=path) from exc


def _check_zone(value: object, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise SpecError(f"an IANA time zone name (Europe/Paris), not {value!r}", path=path)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SpecError(f"unknown time zone {value!r} (an IANA name: Europe/Paris, UTC)", path=path) from exc


def program_schedules(program: ProgramSpec) -> list[tuple[int, Schedule]]:
    """The program's schedules, as (index in ``event_triggers``, schedule), checked.

    Raises:
        SpecError: naming ``event_triggers[i].source_config.<field>``.
    """
    return [
        (index, parse_schedule(trigger.source_config, f"event_triggers[{index}].source_config"))
        for index, trigger in enumerate(program.event_triggers)
        if trigger.event_type == SCHEDULE_TYPE
    ]


class AlignedInterval(schedule):  # type: ignore[misc]
    """Every ``run_every`` seconds, due at the multiples of it since the epoch: beats started at different
    moments fire at the same boundaries, each boundary once (a beat that was down fires once to catch up)."""

    def _after(self, moment: float) -> float:
        """The first boundary after ``moment``."""
        length = float(self.run_every.total_seconds())
        return (math.floor(moment / length) + 1) * length

    def _last(self, last_run_at: datetime) -> float:
        return float(self.maybe_make_aware(last_run_at).timestamp())

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return timedelta(seconds=self._after(self._last(last_run_at)) - time.time())

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = time.time()
        due = self._after(self._last(last_run_at))
        if now >= due:
            return schedstate(is_due=True, next=self._after(now) - now)
        return schedstate(is_due=False, next=due - now)

    def __repr__(self) -> str:
        return f"<aligned interval: every {self.run_every.total_seconds():g}s>"


class ZonedCrontab(crontab):  # type: ignore[misc]
    """A crontab read in ``timezone`` (an IANA name), else in the app's time zone."""

    def __init__(self, *args: Any, timezone: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.zone_name = timezone

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.zone_name) if self.zone_name else self.app.timezone

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self._orig_minute, self._orig_hour, self._orig_day_of_week, self._orig_day_of_month)
        return (_zoned_crontab, (*fields, self._orig_month_of_year, self.zone_name))


def _zoned_crontab(
    minute: Any, hour: Any, day_of_week: Any, day_of_month: Any, month_of_year: Any, zone: str | None
) -> ZonedCrontab:
    return ZonedCrontab(minute, hour, day_of_week, day_of_month, month_of_year, timezone=zone)
