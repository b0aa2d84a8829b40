"""Schedules in django-celery-beat's tables, without a broker: the program's sync (idempotent, owning its
rows only), rows read back as aligned schedules (an admin edit counts), ``n3.schedules`` on the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from namel3ss_celery import Namel3ssCelery, SpecError
from namel3ss_celery.events.schedule_stores import runtime_schedules, uses_django_beat
from namel3ss_celery.events.schedules import AlignedInterval, ZonedCrontab
from namel3ss_celery.spec import ProgramSpec, load_program
from tests.django_example import setup_django

pytestmark = pytest.mark.timeout(60)

SCHEDULER = "namel3ss_celery.events.django_beat:DatabaseScheduler"


def program(*triggers: str) -> ProgramSpec:
    """A program of one block and the schedule ``triggers`` (YAML flow mappings)."""
    block = {"name": "ticked", "steps": [{"target": "django_beat_unit.echo"}]}
    return load_program({"parallel_blocks": [block], "event_triggers": yaml.safe_load(f"[{', '.join(triggers)}]")})


POLL = "{name: poll, event_type: schedule, trigger_target: ticked, source_config: {interval_seconds: 30}}"
NIGHTLY = (
    "{name: nightly, event_type: schedule, trigger_target: ticked, "
    'source_config: {cron: "30 2 * * *", timezone: Europe/Paris}}'
)


@pytest.fixture(scope="module")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from django.db import connections

    yield setup_django(tmp_path_factory.mktemp("django") / "db.sqlite3")
    connections.close_all()


@pytest.fixture
def app(django_db: Path) -> Iterator[Celery]:
    from django_celery_beat.models import PeriodicTask

    from namel3ss_celery import step

    @step("django_beat_unit.echo")
    def echo(step: dict[str, Any], context: dict[str, Any]) -> Any:
        return step.get("value")

    PeriodicTask.objects.all().delete()
    app = Celery("django_beat_unit", set_as_current=False)
    app.conf.update(broker_url="memory://", beat_scheduler=SCHEDULER, timezone="America/New_York")
    yield app
    app.close()


def rows() -> dict[str, Any]:
    from django_celery_beat.models import PeriodicTask

    return {task.name: task for task in PeriodicTask.objects.all()}


def test_the_program_is_written_once_and_a_second_sync_changes_nothing(app: Celery) -> None:
    from django_celery_beat.models import PeriodicTasks

    from namel3ss_celery.events.django_beat import FROM_PROGRAM, sync_program

    first = sync_program(program(POLL, NIGHTLY), app)
    assert sorted(first.written) == ["nightly", "poll"] and first.removed == []
    found = rows()
    assert set(found) == {"n3:poll", "n3:nightly"}
    poll, nightly = found["n3:poll"], found["n3:nightly"]
    assert (poll.task, poll.interval.every, poll.interval.period) == ("n3.trigger.schedule", 30, "seconds")
    cron = nightly.crontab
    assert (cron.minute, cron.hour, str(cron.timezone)) == ("30", "2", "Europe/Paris")
    assert poll.description == FROM_PROGRAM
    changed_at = PeriodicTasks.last_change()
    again = sync_program(program(POLL, NIGHTLY), app)
    assert again.written == [] and sorted(again.unchanged) == ["nightly", "poll"]
    assert PeriodicTasks.last_change() == changed_at  # beat is told of no change


def test_a_sync_updates_and_removes_the_programs_rows_only(app: Celery) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from namel3ss_celery.events.django_beat import sync_program

    sync_program(program(POLL, NIGHTLY), app)
    every = IntervalSchedule.objects.create(every=10, period="seconds")
    PeriodicTask.objects.create(name="users-own", task="proj.cleanup", interval=every)
    n3 = Namel3ssCelery(app)
    n3.schedules.add("added", "ticked", interval_seconds=5)
    PeriodicTask.objects.filter(name="n3:poll").update(enabled=False)  # disabled in the admin

    done = sync_program(program(POLL.replace("30}", "45}")), app)
    assert done.written == ["poll"] and done.removed == ["nightly"]
    found = rows()
    assert set(found) == {"n3:poll", "n3:added", "users-own"}
    assert found["n3:poll"].interval.every == 45 and found["n3:poll"].enabled is False  # stays disabled
    assert found["users-own"].task == "proj.cleanup"
    n3.close()


def test_a_rows_interval_or_crontab_is_its_schedule_aligned_and_its_message_says_so(app: Celery) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from namel3ss_celery.events.django_beat import ScheduleEntry, sync_program

    sync_program(program(POLL, NIGHTLY), app)
    poll = PeriodicTask.objects.get(name="n3:poll")
    poll.interval = IntervalSchedule.objects.create(every=2, period="minutes")  # an edit in the admin
    poll.save()
    entry = ScheduleEntry(PeriodicTask.objects.get(name="n3:poll"), app=app)
    assert isinstance(entry.schedule, AlignedInterval) and entry.schedule.run_every.total_seconds() == 120
    assert entry.args[:3] == ["poll", "ticked", {"interval_seconds": 120.0}]
    nightly = ScheduleEntry(PeriodicTask.objects.get(name="n3:nightly"), app=app)
    assert isinstance(nightly.schedule, ZonedCrontab) and nightly.schedule.zone_name == "Europe/Paris"
    assert nightly.args[2] == {"cron": "30 2 * * *", "timezone": "Europe/Paris"}


def test_a_cron_line_without_a_zone_is_written_in_the_apps(app: Celery) -> None:
    from namel3ss_celery.events.django_beat import sync_program

    sync_program(program(NIGHTLY.replace(", timezone: Europe/Paris", "")), app)
    assert str(rows()["n3:nightly"].crontab.timezone) == "America/New_York"


def test_the_scheduler_writes_the_program_and_keeps_the_apps_own_entries(app: Celery) -> None:
    from celery.schedules import schedule

    from namel3ss_celery.events.django_beat import DatabaseScheduler

    n3 = Namel3ssCelery(app)
    n3.events.program = lambda: program(POLL)  # type: ignore[method-assign]
    app.conf.beat_schedule = {
        "n3:poll": {"task": "n3.trigger.schedule", "schedule": 1.0},  # the merged copy: the sync writes it
        "own": {"task": "proj.cleanup", "schedule": schedule(60)},
    }
    scheduler = DatabaseScheduler(app=app)
    assert {"n3:poll", "own"} <= set(scheduler.schedule)
    assert isinstance(scheduler.schedule["n3:poll"].schedule, AlignedInterval)
    assert rows()["n3:poll"].interval.every == 30
    n3.close()


@pytest.mark.parametrize("triggers", [(POLL,), ()], ids=["after-a-sync", "no-change-counted-yet"])
def test_a_schedule_added_as_beat_starts_is_read_without_a_restart(
    app: Celery, triggers: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_celery_beat.models import PeriodicTasks

    from namel3ss_celery.events.django_beat import DatabaseScheduler

    PeriodicTasks.objects.all().delete()  # a fresh database has no change counter
    n3 = Namel3ssCelery(app)
    n3.events.program = lambda: program(*triggers)  # type: ignore[method-assign]
    install = DatabaseScheduler.install_default_entries

    def added_meanwhile(scheduler: DatabaseScheduler, data: Any) -> None:
        n3.schedules.add("early", "ticked", interval_seconds=30)  # just after beat's first read of the tables
        install(scheduler, data)

    monkeypatch.setattr(DatabaseScheduler, "install_default_entries", added_meanwhile)
    scheduler = DatabaseScheduler(app=app)
    assert "n3:early" in scheduler.schedule  # read again at the next look, not after five minutes
    n3.close()


def test_schedules_added_changed_listed_and_removed_through_the_models(app: Celery) -> None:
    n3 = Namel3ssCelery(app)
    n3.events.program = lambda: program()  # type: ignore[method-assign]
    schedules = n3.schedules
    assert type(schedules).__name__ == "DjangoSchedules"
    added = schedules.add("fast", "ticked", interval_seconds=0.5, context={"k": 1})
    assert (added.config, added.context, added.enabled) == ({"interval_seconds": 0.5}, {"k": 1}, True)
    assert rows()["n3:fast"].interval.period == "microseconds"
    changed = schedules.add("fast", "ticked", cron="*/5 * * * *", timezone="UTC")
    assert changed.config == {"cron": "*/5 * * * *", "timezone": "UTC"} and rows()["n3:fast"].interval is None
    assert [s.name for s in schedules.list()] == ["fast"] and schedules.get("fast") == changed
    with pytest.raises(SpecError) as refused:
        schedules.add("bad", "nowhere", interval_seconds=1)
    assert refused.value.path == "target"
    with pytest.raises(SpecError) as refused:
        schedules.add("bad", "ticked", cron="* 25 * * *")
    assert refused.value.path == "schedule.cron"
    assert schedules.remove("fast") is True and schedules.remove("fast") is False
    assert schedules.get("fast") is None and rows() == {}
    n3.close()


@pytest.mark.parametrize(
    ("scheduler", "django"),
    [
        (SCHEDULER, True),
        ("django_celery_beat.schedulers:DatabaseScheduler", True),
        ("celery.beat:PersistentScheduler", False),
        ("namel3ss_celery.events.redbeat:RedBeatScheduler", False),
        (None, False),
    ],
)
def test_the_apps_beat_scheduler_chooses_the_store(scheduler: str | None, django: bool) -> None:
    app = Celery("choice", set_as_current=False)
    app.conf.beat_scheduler = scheduler
    assert uses_django_beat(app) is django
    if not django:
        assert type(runtime_schedules(app, lambda: None)).__name__ == "Schedules"
    app.close()


@pytest.mark.parametrize(
    ("extra", "interval"),
    [([], ["--max-interval", "5"]), (["--max-interval", "1"], ["--max-interval", "1"])],
)
def test_namel3ss_celery_beat_runs_the_database_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], interval: list[str]
) -> None:
    from namel3ss_celery.cli import beat as beat_cli
    from namel3ss_celery.cli import main

    good = tmp_path / "program.yaml"
    good.write_text(
        "parallel_blocks: [{name: b, steps: [{target: x}]}]\n"
        "event_triggers: [{name: t, event_type: schedule, trigger_target: b, source_config: {interval_seconds: 5}}]\n"
    )
    started: list[list[str]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        started.append(argv)

    monkeypatch.setattr(beat_cli.os, "execve", execve)
    args = ["beat", "-A", "proj", "--program", str(good), "--scheduler", "django", *extra]
    main(args)
    [argv] = started
    at = argv.index("--scheduler")
    assert argv[at + 1] == SCHEDULER  # the database's entries, the program's written there as beat starts
    assert [word for word in argv if word.startswith("--max-interval")] == ["--max-interval"]
    assert argv[argv.index("--max-interval") : argv.index("--max-interval") + 2] == interval


def test_a_scheduler_without_a_program_leaves_the_programs_rows(app: Celery) -> None:
    from namel3ss_celery.events.django_beat import DatabaseScheduler, sync_program

    sync_program(program(POLL), app)
    scheduler = DatabaseScheduler(app=app)  # no namel3ss-celery on this app: no program
    assert "n3:poll" in scheduler.schedule and "n3:poll" in rows()
