"""Schedules changed at runtime, without restarting beat: entries kept in Redis by celery-redbeat.

``n3.schedules.add(name, target, cron=... | interval_seconds=...)`` writes a RedBeat entry, ``remove(name)``
deletes it, ``list()`` reads them back; the beat running ``RedBeatScheduler`` (this module's, or
``namel3ss-celery beat --scheduler redbeat``) picks each change up at its next tick. RedBeat keeps one beat
active at a time (a lock in Redis); the claim of (schedule, slot) still guards the firing.

This module's ``RedBeatScheduler`` is RedBeat's, with each namel3ss-celery entry's schedule rebuilt from its
message (its ``source_config``): intervals aligned to the epoch, cron lines in their own time zone. Plain
``redbeat.RedBeatScheduler`` runs the same entries with Celery's own interval and crontab.

Needs the ``beat`` extra (``pip install 'namel3ss-celery[beat]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from redbeat import RedBeatScheduler as _RedBeatScheduler
from redbeat import RedBeatSchedulerEntry
from redbeat.schedulers import ensure_conf, get_redis

from ..spec import ProgramSpec
from .beat import ENTRY_PREFIX, SCHEDULE_TASK, beat_entry, entry_name
from .schedule_api import ScheduleInfo, checked_schedule
from .schedules import parse_schedule

__all__ = ["RedBeatScheduler", "ScheduleEntry", "ScheduleInfo", "Schedules"]


class ScheduleEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """A RedBeat entry whose schedule, for ``n3.trigger.schedule``, comes from its message's config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.task == SCHEDULE_TASK and len(self.args or ()) >= 3 and isinstance(self.args[2], Mapping):
            self.schedule = parse_schedule(self.args[2]).celery_schedule(self.app)


class RedBeatScheduler(_RedBeatScheduler):  # type: ignore[misc]
    """celery-redbeat's scheduler, with namel3ss-celery's schedules aligned (see ``ScheduleEntry``), its
    entries in the coordination store unless ``redbeat_redis_url`` says otherwise."""

    Entry = ScheduleEntry

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        use_coordination_store(app)
        super().__init__(app, *args, **kwargs)


def use_coordination_store(app: Any) -> None:
    """Keep RedBeat's entries in the coordination store (Redis), unless the app sets ``redbeat_redis_url``
    (with no ``redbeat_redis_options``, the store takes none of the broker's transport options)."""
    if not app.conf.get("redbeat_redis_url"):
        n3 = getattr(app, "namel3ss", None)
        url = n3.settings.coordination() if n3 is not None else app.conf.broker_url
        app.conf.redbeat_redis_url = url
        app.conf.redbeat_redis_options = app.conf.get("redbeat_redis_options") or {}  # not the broker's


class Schedules:
    """Add, change, remove and list schedules at runtime (RedBeat entries in Redis).

    Args:
        app: the Celery app (RedBeat reads ``redbeat_redis_url``, else the broker URL, from its config).
        program: this process's program, if any: a target is checked against it.
    """

    def __init__(self, app: Any, program: Callable[[], ProgramSpec | None]) -> None:
        self.app = app
        self._program = program
        use_coordination_store(app)

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
        """Add schedule ``name`` (or change it: the same name replaces its schedule, target and context).
        It first fires at its next slot: the next multiple of ``interval_seconds``, the next cron time.

        Args:
            name: the schedule's name (its beat entry is ``n3:<name>``).
            target: a workflow or parallel block of the program the workers load.
            cron: a cron line of five fields (``"*/5 * * * *"``), with an optional ``timezone``; or
            interval_seconds: seconds between runs.
            context: JSON data the runs start with.

        Returns:
            What was stored.

        Raises:
            SpecError: a bad name, cron line, time zone or interval, or a target this process's program
                does not have, naming the argument.
        """
        checked = checked_schedule(name, target, self._program(), cron, timezone, interval_seconds)
        definition = beat_entry(name, target, checked, context, self.app)
        entry = ScheduleEntry(name=entry_name(name), app=self.app, **definition)
        entry.last_run_at = entry.default_now()  # first due at its next slot, not at once
        entry.save()
        return _info(entry)

    def _key(self, entry: str) -> str:
        ensure_conf(self.app)
        return str(ScheduleEntry.generate_key(self.app, entry))

    def remove(self, name: str) -> bool:
        """Remove schedule ``name``; whether there was one."""
        try:
            entry = ScheduleEntry.from_key(self._key(entry_name(name)), app=self.app)
        except KeyError:
            return False
        entry.delete()
        return True

    def get(self, name: str) -> ScheduleInfo | None:
        """Schedule ``name``, if it is kept in Redis."""
        try:
            entry = ScheduleEntry.from_key(self._key(entry_name(name)), app=self.app)
        except KeyError:
            return None
        return _info(entry) if entry.task == SCHEDULE_TASK else None

    def list(self) -> list[ScheduleInfo]:
        """Every namel3ss-celery schedule kept in Redis (the program's too, once a RedBeat beat stored
        them), by name."""
        prefix = self._key(ENTRY_PREFIX)
        keys = get_redis(self.app).zrange(self.app.redbeat_conf.schedule_key, 0, -1)
        found = []
        for key in sorted(str(k) for k in keys if str(k).startswith(prefix)):
            try:
                entry = ScheduleEntry.from_key(key, app=self.app)
            except KeyError:
                continue  # removed meanwhile
            if entry.task == SCHEDULE_TASK:
                found.append(_info(entry))
        return found


def _info(entry: Any) -> ScheduleInfo:
    name, target, config, context = (list(entry.args) + [{}])[:4]
    return ScheduleInfo(str(name), str(target), dict(config), dict(context or {}), bool(entry.enabled))
