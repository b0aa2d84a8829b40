"""Schedules in django-celery-beat's tables: the admin shows and edits them, and a beat running this
module's ``DatabaseScheduler`` (``namel3ss-celery beat --scheduler django``) picks each change up at its
next tick, without a restart.

Each namel3ss-celery schedule is a ``PeriodicTask`` named ``n3:<name>`` that sends ``n3.trigger.schedule``,
with an ``IntervalSchedule`` or a ``CrontabSchedule`` the admin edits. Its ``description`` says who owns
it: the program (``sync_program`` writes those when beat starts, and removes the ones the program no longer
has) or ``n3.schedules.add`` at runtime. Rows of the user's own are never touched. A row's schedule is read
from its interval or crontab (an edit in the admin counts), aligned to the epoch as the other schedulers
do, and its message carries that schedule, so the worker's claim of (schedule, slot) still guards every
firing: two beats never start a run twice for one slot.

Needs Django with ``django_celery_beat`` in ``INSTALLED_APPS`` (the ``django`` extra), set up before this
module is imported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler as _DatabaseScheduler
from django_celery_beat.schedulers import ModelEntry

from ..errors import SpecError
from ..spec import ProgramSpec
from .beat import ENTRY_PREFIX, SCHEDULE_TASK, entry_name, program_entries
from .schedule_api import ScheduleInfo, checked_schedule
from .schedules import CRON, INTERVAL, TIMEZONE, parse_schedule

__all__ = ["DatabaseScheduler", "DjangoSchedules", "ScheduleEntry", "SyncResult", "sync_program"]

logger = logging.getLogger("namel3ss_celery")

FROM_PROGRAM = "namel3ss-celery: a schedule of the program (rewritten when beat starts)"
FROM_RUNTIME = "namel3ss-celery: added with n3.schedules"
SCHEDULE_FIELDS = ("interval", "crontab", "solar", "clocked")


def row_config(task: Any) -> dict[str, Any] | None:
    """The ``source_config`` a ``PeriodicTask``'s interval or crontab says, if it has one of them."""
    if task.interval is not None:
        seconds = timedelta(**{task.interval.period: task.interval.every}).total_seconds()
        return {INTERVAL: float(seconds)}
    if task.crontab is not None:
        c = task.crontab
        line = " ".join(str(v) for v in (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week))
        return {CRON: line, TIMEZONE: str(c.timezone)}
    return None


def _schedule_row(config: Mapping[str, Any], app: Any) -> tuple[str, Any]:
    """The interval or crontab row for ``config`` (found, or created)."""
    schedule = parse_schedule(config)
    if schedule.interval_seconds is not None:
        seconds = schedule.interval_seconds
        every, period = (
            (int(seconds), IntervalSchedule.SECONDS)
            if seconds == int(seconds)
            else (round(seconds * 1_000_000), IntervalSchedule.MICROSECONDS)
        )
        found = IntervalSchedule.objects.filter(every=every, period=period).first()
        return "interval", found or IntervalSchedule.objects.create(every=every, period=period)
    assert schedule.cron is not None
    minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split()
    zone = schedule.timezone or str(app.timezone)  # no zone: the app's, written down so the admin shows it
    fields = dict(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
    )
    found = CrontabSchedule.objects.filter(timezone=zone, **fields).first()
    return "crontab", found or CrontabSchedule.objects.create(timezone=zone, **fields)


def write_schedule(
    name: str,
    target: str,
    config: Mapping[str, Any],
    context: Mapping[str, Any],
    owner: str,
    app: Any,
    queue: str | None = None,
) -> tuple[Any, bool]:
    """Create or update the ``PeriodicTask`` of schedule ``name``; (the row, whether it changed). A row that
    already says the same is left alone (beat is not told of a change); ``enabled`` is never touched, so a
    schedule disabled in the admin stays disabled."""
    kind, row = _schedule_row(config, app)
    wanted: dict[str, Any] = {key: None for key in SCHEDULE_FIELDS}
    wanted[kind] = row
    wanted.update(
        task=SCHEDULE_TASK,
        args=json.dumps([name, target, parse_schedule(config).config(), dict(context)]),
        queue=queue,
        description=owner,
    )
    task = PeriodicTask.objects.filter(name=entry_name(name)).first()
    if task is None:
        return PeriodicTask.objects.create(name=entry_name(name), **wanted), True
    if all(_same(getattr(task, key), value) for key, value in wanted.items()):
        return task, False
    for key, value in wanted.items():
        setattr(task, key, value)
    task.save()
    return task, True


def _same(have: Any, want: Any) -> bool:
    if hasattr(want, "pk"):
        return have is not None and have.pk == want.pk
    if isinstance(want, str) and isinstance(have, str) and have.startswith("["):
        return bool(json.loads(have) == json.loads(want))
    return bool(have == want)


@dataclass(frozen=True)
class SyncResult:
    """What ``sync_program`` did, by schedule name."""

    written: list[str] = field(default_factory=list)  # created or changed
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_program(program: ProgramSpec, app: Any) -> SyncResult:
    """Write the program's schedules to django-celery-beat's tables, owned by the program: each one created
    or brought up to date, and the program's rows of schedules it no longer has deleted. Rows added with
    ``n3.schedules`` and the user's own are left as they are. Running it twice changes nothing the second
    time."""
    result = SyncResult()
    entries = program_entries(program, app)
    for entry in entries.values():
        name, target, config, context = entry["args"]
        queue = entry.get("options", {}).get("queue")
        _task, changed = write_schedule(name, target, config, context, FROM_PROGRAM, app, queue)
        (result.written if changed else result.unchanged).append(name)
    stale = PeriodicTask.objects.filter(task=SCHEDULE_TASK, description=FROM_PROGRAM).exclude(name__in=list(entries))
    for task in stale:
        result.removed.append(task.name[len(ENTRY_PREFIX) :])
        task.delete()
    return result


class ScheduleEntry(ModelEntry):  # type: ignore[misc]
    """A database entry; for ``n3.trigger.schedule``, its schedule comes from the row's interval or crontab
    (aligned to the epoch, in the crontab's zone), and the message carries it."""

    def __init__(self, model: Any, app: Any = None) -> None:
        super().__init__(model, app=app)
        args: list[Any] = list(getattr(self, "args", None) or [])
        if self.task == SCHEDULE_TASK and len(args) >= 3:
            config = row_config(model) or args[2]
            try:
                self.schedule = parse_schedule(config, f"periodic task {model.name!r}").celery_schedule(self.app)
            except SpecError as exc:
                logger.error("%s: %s", model.name, exc)
                raise ValueError(str(exc)) from exc  # the scheduler skips the entry
            self.args = [args[0], args[1], parse_schedule(config).config(), *args[3:]]


class DatabaseScheduler(_DatabaseScheduler):  # type: ignore[misc]
    """django-celery-beat's scheduler, with the program's schedules written to its tables when it starts
    (``sync_program``) and namel3ss-celery's entries aligned (see ``ScheduleEntry``)."""

    Entry = ScheduleEntry

    def setup_schedule(self) -> None:
        n3 = getattr(self.app, "namel3ss", None)
        program = n3.events.program() if n3 is not None else None
        if program is None:  # no program here: its rows stay as the last beat with one left them
            logger.warning("no program (NAMEL3SS_CELERY_PROGRAM): the program's periodic tasks are not synced")
        else:
            done = sync_program(program, self.app)
            logger.info("program schedules: %d written, %d unchanged, %d removed", *map(len, vars(done).values()))
        # django-celery-beat notes its change counter at its second look at the tables, so a row written
        # between the first read and that look waited for its five-minute full read: noted before, it is a change.
        self._last_timestamp = self._change_counter()
        self.install_default_entries(self.schedule)  # the first read of the tables
        beat_schedule = self.app.conf.beat_schedule or {}
        self.update_from_dict({k: v for k, v in beat_schedule.items() if not k.startswith(ENTRY_PREFIX)})

    def _change_counter(self) -> Any:
        """django-celery-beat's change counter (started, on a database that has none yet)."""
        if self.Changes.last_change() is None:
            self.Changes.update_changed()
        return self.Changes.last_change()


class DjangoSchedules:
    """Add, change, remove and list schedules at runtime (django-celery-beat's ``PeriodicTask`` rows).

    Args:
        app: the Celery app.
        program: this process's program, if any: a target is checked against it.
    """

    def __init__(self, app: Any, program: Callable[[], ProgramSpec | None]) -> None:
        self.app = app
        self._program = program

    def add(
        self,
        name: str,
        target: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        interval_seconds: float | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> ScheduleInfo:
        """Add schedule ``name`` (or change it: the same name replaces its schedule, target and context), as
        ``events.redbeat.Schedules.add`` does; the row shows in the admin as ``n3:<name>``.

        Raises:
            SpecError: a bad name, cron line, time zone or interval, or a target this process's program
                does not have, naming the argument.
        """
        checked = checked_schedule(name, target, self._program(), cron, timezone, interval_seconds)
        task, _changed = write_schedule(name, target, checked, context or {}, FROM_RUNTIME, self.app)
        return _info(task)

    def remove(self, name: str) -> bool:
        """Remove schedule ``name``; whether there was one."""
        deleted = 0
        for task in PeriodicTask.objects.filter(name=entry_name(name), task=SCHEDULE_TASK):
            task.delete()  # one by one: each deletion tells beat of a change
            deleted += 1
        return deleted > 0

    def get(self, name: str) -> ScheduleInfo | None:
        """Schedule ``name``, if the database has it."""
        task = PeriodicTask.objects.filter(name=entry_name(name), task=SCHEDULE_TASK).first()
        return _info(task) if task is not None else None

    def list(self) -> list[ScheduleInfo]:
        """Every namel3ss-celery schedule in the database (the program's, once beat wrote them), by name."""
        rows = PeriodicTask.objects.filter(task=SCHEDULE_TASK, name__startswith=ENTRY_PREFIX).order_by("name")
        return [_info(task) for task in rows]


def _info(task: Any) -> ScheduleInfo:
    name, target, config, context = (list(json.loads(task.args or "[]")) + [{}])[:4]
    config = row_config(task) or config
    return ScheduleInfo(str(name), str(target), dict(config), dict(context or {}), bool(task.enabled))
