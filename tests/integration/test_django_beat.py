"""Schedules in django-celery-beat's tables, on the example Django project (examples/django_project): a real
``namel3ss-celery beat --scheduler django`` (django_celery_beat's DatabaseScheduler) and a real
``celery -A reports_site worker`` on Redis, sharing one SQLite file with the test process.

The program's interval schedule is a ``PeriodicTask`` row the admin shows, and fires once per slot, also
with two beats; a schedule added, edited (its row's interval, as the admin saves it) and removed takes
effect without a restart, and so does an edit posted through the admin's own change form; beat starting
again brings a program's row back to the program's schedule and leaves it disabled if the admin disabled it.
"""

from __future__ import annotations

import gc
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import Namel3ssCelery
from namel3ss_celery.events.model import Event
from namel3ss_celery.events.schedule_api import ScheduleInfo
from tests.django_example import PROJECT, setup_django
from tests.waiting import poll, wait_until

from .html_form import Form, read_form
from .workers import CLI, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WAIT = 60

PROGRAM = """
parallel_blocks:
  - {name: tally, steps: [{target: reports.count_reports}]}
event_triggers:
  - {name: tally-TAG, event_type: schedule, trigger_target: tally, source_config: {interval_seconds: 1}}
"""
# The same program with a second schedule, for the admin to edit (the first one shows that beat ticks).
EDITED_PROGRAM = (
    PROGRAM
    + "  - {name: edited-TAG, event_type: schedule, trigger_target: tally, source_config: {interval_seconds: 2}}\n"
)
ADMIN_URLS = "tests.integration.django_admin_urls"


@dataclass
class Site:
    n3: Namel3ssCelery
    worker: WorkerProcess
    env: dict[str, str]
    tag: str
    program: Path
    log_dir: Path
    since: str

    def events(self) -> list[Event]:
        store = self.n3.events._store()
        found, after = [], self.since
        while True:
            batch = store.read(after, count=500)
            if not batch:
                return found
            found.extend(event for _id, event in batch)
            after = batch[-1][0]

    def fired(self, name: str) -> list[Event]:
        return [e for e in self.events() if e.event_type == "schedule" and e.data["trigger"] == name]

    def published(self, name: str, after: float, every: float | None = None) -> list[Event]:
        """Schedule ``name``'s firings that beat published after ``after`` (epoch seconds), at interval
        ``every`` if given."""
        found = [e for e in self.fired(name) if e.data["fired_at"] > after]
        return [e for e in found if every is None or e.data["schedule"] == {"interval_seconds": every}]

    def beat(self, name: str, program: Path | None = None) -> WorkerProcess:
        program = program or self.program
        command = [CLI, "beat", "-A", "reports_site", "--program", str(program), "--scheduler", "django"]
        command += ["-l", "INFO", "--max-interval", "1"]
        return WorkerProcess("reports_site", self.env, self.log_dir, command=command, name=name, cwd=PROJECT)


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from django.db import connections

    db = setup_django(tmp_path_factory.mktemp("django") / "db.sqlite3")
    tag = uuid.uuid4().hex[:8]
    log_dir = tmp_path_factory.mktemp("beat")
    program = log_dir / "schedules.yaml"
    program.write_text(PROGRAM.replace("TAG", tag))
    queue = f"n3djbeat-{tag}"
    env = {
        "DJANGO_SETTINGS_MODULE": "reports_site.settings",
        "REPORTS_SITE_VAR": str(db.parent),
        "REPORTS_SITE_QUEUE": queue,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_PROGRAM": str(program),
    }
    app = Celery("reports_site", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=redis_url, result_backend=redis_url, task_default_queue=queue)
    n3 = Namel3ssCelery(app)
    n3.events.use_program(program)
    worker = WorkerProcess("reports_site", env, log_dir, pool="solo", concurrency=1, queues=[queue], cwd=PROJECT)
    try:
        worker.wait_ready(app)
        yield Site(n3, worker, env, tag, program, log_dir, n3.events._store().newest())
    finally:
        worker.stop()
        gc.collect()
        n3.close()
        app.close()
        app.backend.client.close()
        connections.close_all()


def test_the_programs_interval_schedule_is_a_row_and_fires_once_per_slot(site: Site) -> None:
    from django_celery_beat.models import PeriodicTask

    name, window = f"tally-{site.tag}", 6
    beat = site.beat("beat-db")
    try:
        wait_until(lambda: len(site.fired(name)) >= 1, WAIT, lambda: f"no firing\n{beat.log()}\n{site.worker.log()}")
        row = PeriodicTask.objects.get(name=f"n3:{name}")  # what the admin lists
        assert (row.task, row.interval.every, row.interval.period) == ("n3.trigger.schedule", 1, "seconds")
        assert row.description.startswith("namel3ss-celery") and row.enabled
        first = min(e.data["slot"] for e in site.fired(name))
        wait_until(
            lambda: any(e.data["slot"] >= first + window for e in site.fired(name)),
            WAIT,
            lambda: f"the window did not pass\n{beat.log()}\n{site.worker.log()}",
        )
    finally:
        beat.stop()
    slots = [e.data["slot"] for e in site.fired(name)]
    assert len(slots) == len(set(slots))  # one firing per slot
    in_window = [s for s in slots if first <= s < first + window]
    assert window - 1 <= len(in_window) <= window, sorted(slots)
    started = [e for e in site.events() if e.event_type == "workflow_started"]
    run_id = next(e.data["instance_id"] for e in started if e.data["trigger_event_id"] == site.fired(name)[0].event_id)
    result = site.n3.run(run_id).get(timeout=WAIT)
    assert result.overall_status == "completed", result.error_message
    assert PeriodicTask.objects.get(name=f"n3:{name}").total_run_count >= window - 1


def test_the_admin_lists_the_programs_schedule_and_opens_it_for_editing(site: Site) -> None:
    from django.contrib.auth.models import User
    from django.test import Client, override_settings
    from django_celery_beat.models import PeriodicTask

    from namel3ss_celery.events.django_beat import sync_program

    sync_program(site.n3.events.program(), site.n3.app)  # what beat does as it starts (idempotent)
    row = PeriodicTask.objects.get(name=f"n3:tally-{site.tag}")
    admin, _ = User.objects.get_or_create(username=f"admin-{site.tag}", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    before = os.environ.get("DJANGO_SETTINGS_MODULE")
    with override_settings(ROOT_URLCONF="tests.integration.django_admin_urls"):
        listed = client.get("/admin/django_celery_beat/periodictask/")
        opened = client.get(f"/admin/django_celery_beat/periodictask/{row.pk}/change/")
    assert listed.status_code == 200 and f"n3:tally-{site.tag}" in listed.content.decode()
    assert opened.status_code == 200 and "n3.trigger.schedule" in opened.content.decode()
    assert os.environ.get("DJANGO_SETTINGS_MODULE") == before  # workers started later stay as they were


def _open_form(client: Any, page: str) -> Form:
    """The admin's change form at ``page``, as the browser shows it."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF=ADMIN_URLS):
        opened = client.get(page)
    assert opened.status_code == 200, opened.status_code
    return read_form(opened.content.decode(), "periodictask_form")


def _save_form(client: Any, page: str, data: dict[str, list[str]]) -> None:
    """Submit the change form with its Save button; a form the admin refuses answers 200 with its errors."""
    from django.test import override_settings

    with override_settings(ROOT_URLCONF=ADMIN_URLS):
        saved = client.post(page, {**data, "_save": ["Save"]})
    assert saved.status_code == 302, saved.content.decode()


def test_an_edit_in_the_admins_change_form_takes_effect_and_beat_starting_again_keeps_it_disabled(
    site: Site,
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client
    from django_celery_beat.models import PeriodicTask

    name, ticking = f"edited-{site.tag}", f"tally-{site.tag}"
    program = site.log_dir / "edited-schedules.yaml"
    program.write_text(EDITED_PROGRAM.replace("TAG", site.tag))
    admin, _ = User.objects.get_or_create(username=f"admin-{site.tag}", is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)  # a post without the form's CSRF token is refused
    client.force_login(admin)
    beat = site.beat("beat-db-admin", program)
    try:
        wait_until(lambda: site.published(name, 0, every=2.0), WAIT, lambda: f"no firing\n{beat.log()}")
        page = f"/admin/django_celery_beat/periodictask/{PeriodicTask.objects.get(name=f'n3:{name}').pk}/change/"

        form = _open_form(client, page)  # the program's row: every 2 seconds, enabled
        assert (form.selected("interval"), form.fields["enabled"]) == ("every 2 seconds", ["on"])
        _save_form(client, page, {**form.data(), "interval": [form.options["interval"]["every second"]]})
        edited_at = time.time()
        wait_until(
            lambda: len(site.published(name, edited_at, every=1.0)) >= 3,
            WAIT,
            lambda: f"the admin's edit did not take\n{beat.log()}\n{site.worker.log()}",
        )
        moments = [datetime.fromisoformat(e.data["scheduled_for"]) for e in site.published(name, edited_at, 1.0)]
        assert (moments[2] - moments[0]).total_seconds() < 4, moments  # a slot a second, not every 2 seconds

        changes = beat.log().count("DatabaseScheduler: Schedule changed")
        form = _open_form(client, page)
        assert form.selected("interval") == "every second"
        _save_form(client, page, {key: values for key, values in form.data().items() if key != "enabled"})
        wait_until(
            lambda: beat.log().count("DatabaseScheduler: Schedule changed") > changes,
            WAIT,
            lambda: f"beat did not read the tables again\n{beat.log()}",
        )
        reread_at = time.time()
        wait_until(  # beat goes on: three slots of the other schedule pass
            lambda: len(site.published(ticking, reread_at)) >= 3, WAIT, lambda: f"beat stopped\n{beat.log()}"
        )
        assert not site.published(name, reread_at), site.published(name, reread_at)  # disabled: no firing
    finally:
        beat.stop()
    stopped_at = time.time()
    row = PeriodicTask.objects.get(name=f"n3:{name}")
    assert (row.interval.every, row.interval.period, row.enabled) == (1, "seconds", False)

    again = site.beat("beat-db-admin-again", program)  # beat starts again: it writes the program's schedules
    try:
        wait_until(lambda: "program schedules:" in again.log(), WAIT, lambda: f"no sync\n{again.log()}")
        assert "program schedules: 1 written, 1 unchanged, 0 removed" in again.log(), again.log()
        form = _open_form(client, page)  # the program's schedule again, and still disabled as the admin left it
        assert form.selected("interval") == "every 2 seconds" and "enabled" not in form.fields
        assert site.n3.schedules.get(name) == ScheduleInfo(name, "tally", {"interval_seconds": 2.0}, {}, False)
        started_at = time.time()
        wait_until(
            lambda: len(site.published(ticking, started_at)) >= 3, WAIT, lambda: f"beat did not tick\n{again.log()}"
        )
        assert not site.published(name, stopped_at), site.published(name, stopped_at)
    finally:
        again.stop()


def test_a_schedule_added_edited_and_removed_through_the_models_needs_no_restart(site: Site) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    name = f"added-{site.tag}"
    schedules = site.n3.schedules
    beat = site.beat("beat-db-runtime")
    try:
        wait_until(lambda: "beat: Starting" in beat.log(), WAIT, lambda: f"beat did not start\n{beat.log()}")
        added = schedules.add(name, "tally", interval_seconds=1, context={"version": 1})
        assert added.config == {"interval_seconds": 1.0} and schedules.get(name) == added
        assert f"n3:{name}" in PeriodicTask.objects.values_list("name", flat=True)
        assert {s.name for s in schedules.list()} >= {name, f"tally-{site.tag}"}
        wait_until(lambda: len(site.fired(name)) >= 2, WAIT, lambda: f"the added schedule did not fire\n{beat.log()}")
        assert {e.data["trigger"] for e in site.fired(name)} == {name}

        row = PeriodicTask.objects.get(name=f"n3:{name}")  # an edit, as the admin's form saves it
        row.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
        row.save()
        edited_at = time.time()
        wait_until(
            lambda: len([e for e in site.fired(name) if e.data["schedule"] == {"interval_seconds": 2.0}]) >= 2,
            WAIT,
            lambda: f"the edit did not take\n{beat.log()}\n{site.worker.log()}",
        )
        later = [e for e in site.fired(name) if e.data["schedule"] == {"interval_seconds": 2.0}]
        assert all(e.data["fired_at"] >= edited_at for e in later)
        assert all(int(e.data["scheduled_for"][17:19]) % 2 == 0 for e in later)  # aligned: even epoch seconds

        assert schedules.remove(name) is True
        removed_at = time.time()
        assert schedules.get(name) is None and schedules.remove(name) is False
        poll(lambda: False, 4.0)  # four slots of the schedule: long enough for a firing to show
        assert not [e for e in site.fired(name) if e.data["fired_at"] > removed_at + 1.5], site.fired(name)[-3:]
        assert "DatabaseScheduler: Schedule changed" in beat.log()  # read from the tables, not restarted
    finally:
        beat.stop()


def test_two_database_beats_fire_each_slot_once(site: Site) -> None:
    name = f"tally-{site.tag}"
    first = site.beat("beat-db-a")
    second = None
    try:
        wait_until(lambda: "beat: Starting" in first.log(), WAIT, lambda: f"beat a did not start\n{first.log()}")
        second = site.beat("beat-db-b")  # a second beat by mistake, on the same tables
        wait_until(
            lambda: len(re.findall(rf"schedule {name}: slot \d+ already fired", site.worker.log())) >= 3,
            WAIT,
            lambda: f"the beats did not meet\n{first.log()}\n{second.log() if second else ''}\n{site.worker.log()}",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    slots = [e.data["slot"] for e in site.fired(name)]
    assert len(slots) == len(set(slots)), sorted(slots)  # never twice for one slot
