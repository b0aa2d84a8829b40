"""The store behind ``n3.schedules``: RedBeat's entries in Redis, or django-celery-beat's tables when the
app's beat runs a database scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import ProgramSpec
from .schedule_api import RuntimeSchedules


def uses_django_beat(app: Any) -> bool:
    """Whether schedules live in django-celery-beat's tables: the app's ``beat_scheduler`` (Django's
    ``CELERY_BEAT_SCHEDULER``) is a django-celery-beat database scheduler, this package's or its own."""
    scheduler = str(app.conf.get("beat_scheduler") or "")
    return scheduler.endswith(":DatabaseScheduler") and "django" in scheduler


def runtime_schedules(app: Any, program: Callable[[], ProgramSpec | None]) -> RuntimeSchedules:
    """The store behind ``n3.schedules``: django-celery-beat's models when the app's beat runs its database
    scheduler, else RedBeat's entries in Redis."""
    if uses_django_beat(app):
        from .django_beat import DjangoSchedules

        return DjangoSchedules(app, program)
    from .redbeat import Schedules

    return Schedules(app, program)
