"""The example Django project (examples/django_project) with a real ``celery -A reports_site worker`` on Redis.

The test process is configured like the project (tests/django_example.py) on the
same SQLite file as the worker: a row it commits is the row the worker reads.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish

from namel3ss_celery import Namel3ssCelery, UnknownRun
from namel3ss_celery.integrations.django import Publication, dispatch_on_commit
from tests.django_example import PROJECT, setup_django

from .workers import REPO, WorkerProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DJANGO_TASK = "celery.contrib.django.task.DjangoTask"


class Rollback(Exception):
    """Raised to leave an atomic block by rolling it back."""


@dataclass
class Site:
    """The project's worker, and the test process's n3 on the same Django settings."""

    n3: Namel3ssCelery
    worker: WorkerProcess
    env: dict[str, str]


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from django.db import connections

    db = setup_django(tmp_path_factory.mktemp("django") / "db.sqlite3")
    assert db.name == "db.sqlite3", db  # the project's settings name the file under REPORTS_SITE_VAR
    queue = f"n3django-{uuid.uuid4().hex[:8]}"
    env = {
        "DJANGO_SETTINGS_MODULE": "reports_site.settings",
        "REPORTS_SITE_VAR": str(db.parent),
        "REPORTS_SITE_QUEUE": queue,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }
    # What reports_site/celery.py does, without its DJANGO_SETTINGS_MODULE: this process's Django is configured.
    app = Celery("reports_site", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=redis_url, result_backend=redis_url, task_default_queue=queue)
    n3 = Namel3ssCelery(app)
    worker = WorkerProcess(
        "reports_site", env, tmp_path_factory.mktemp("workers"), concurrency=2, queues=[queue], cwd=PROJECT
    )
    try:
        worker.wait_ready(app)
        yield Site(n3, worker, env)
    finally:
        worker.stop()
        gc.collect()
        n3.close()
        app.close()
        app.backend.client.close()
        connections.close_all()


def test_the_namel3ss_celery_setting_reaches_the_app(site: Site) -> None:
    assert "reports.steps" in site.n3.settings.step_modules


def test_a_run_dispatched_in_a_transaction_is_published_at_commit_and_reads_the_row(site: Site) -> None:
    from django.db import transaction
    from reports.models import Report
    from reports.workflows import REPORT_WORKFLOW

    title = f"committed-{uuid.uuid4().hex[:6]}"
    published: list[str] = []  # the body of every task message this process publishes, as it goes out

    def record(body: Any = None, **_: Any) -> None:
        published.append(repr(body))

    def of_run() -> list[str]:
        return [body for body in published if run.id in body]

    before_task_publish.connect(record, weak=False)
    try:
        with transaction.atomic():
            report = Report.objects.create(title=title, body="alpha beta gamma delta")
            run = dispatch_on_commit(site.n3, REPORT_WORKFLOW, context={"report_id": report.pk})
            # A step published now would reach a worker that misses the uncommitted row. Rather than
            # give a worker time to run it, check that nothing of the run was published at all: a
            # publication is seen here as it happens, whatever the worker's speed.
            assert of_run() == []
            assert run.publication is Publication.PENDING
            assert site.n3.store.run_record(run.id) is None
            with pytest.raises(UnknownRun):
                site.n3.run(run.id)
        assert run.publication is Publication.PUBLISHED
        assert of_run(), "the commit published the run, but this check saw none of its messages"
    finally:
        before_task_publish.disconnect(record)
    result = site.n3.run(run.id).get(timeout=60)
    assert result.overall_status == "completed", (result.error_message, site.worker.log())
    counted = result.outputs["count"]
    assert (counted["report_id"], counted["title"], counted["words"]) == (report.pk, title, 4)
    report.refresh_from_db()
    assert (report.status, report.word_count) == ("ready", 4)  # written by the worker's second step


def test_a_rolled_back_transaction_publishes_nothing(site: Site) -> None:
    from django.db import transaction
    from reports.models import Report
    from reports.workflows import REPORT_WORKFLOW

    with pytest.raises(Rollback), transaction.atomic():
        report = Report.objects.create(title="rolled back", body="never seen")
        run = dispatch_on_commit(site.n3, REPORT_WORKFLOW, context={"report_id": report.pk})
        raise Rollback
    assert run.publication is Publication.DISCARDED
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # the run never appears, in any process
        assert site.n3.store.run_record(run.id) is None
        time.sleep(0.2)
    with pytest.raises(UnknownRun):
        site.n3.run(run.id)
    assert run.id not in site.worker.log()
    assert not Report.objects.filter(pk=report.pk).exists()


def test_outside_a_transaction_it_publishes_at_once_and_steps_run_as_djangos_task_class(site: Site) -> None:
    from reports.models import Report
    from reports.workflows import REPORT_WORKFLOW

    report = Report.objects.create(title="autocommit", body="one two")  # committed: no atomic block
    run = dispatch_on_commit(site.n3, REPORT_WORKFLOW, context={"report_id": report.pk})
    assert run.publication is Publication.PUBLISHED
    result = run.get(timeout=60)
    assert result.overall_status == "completed", (result.error_message, site.worker.log())
    classes = result.outputs["count"]["task_classes"]
    assert DJANGO_TASK in classes, classes  # the project's task class, kept under namel3ss's step task
    assert any(name.endswith("Namel3ssStepTask") for name in classes)


def test_the_example_command_dispatches_on_commit(site: Site) -> None:
    from reports.models import Report

    title = f"command-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **site.env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "manage.py", "make_report", title, "--body", "a b c d e", "--wait", "60"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + site.worker.log()
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["publication"], out["status"]) == ("published", "completed"), out
    report = Report.objects.get(pk=out["report"])
    assert (report.title, report.run_id, report.status, report.word_count) == (title, out["run"], "ready", 5)


VIEW_SCRIPT = """
import json, sys
from django.test import Client
client = Client()
created = client.post("/reports/", {"title": sys.argv[1], "body": "x y z"})
missing = client.post("/reports/", {"body": "no title"})
print(json.dumps({"status": created.status_code, **created.json(), "missing_title": missing.status_code}))
"""


def test_the_example_view_returns_at_once_and_the_worker_reads_the_row(site: Site) -> None:
    from reports.models import Report

    title = f"view-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **site.env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); exec({VIEW_SCRIPT!r})", title],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["status"], out["missing_title"]) == (202, 400), out
    result = site.n3.run(out["run"]).get(timeout=60)
    assert result.overall_status == "completed", (result.error_message, site.worker.log())
    assert result.outputs["count"]["title"] == title
    report = Report.objects.get(pk=out["report"])
    assert (report.run_id, report.status, report.word_count) == (out["run"], "ready", 3)


def test_the_example_view_answers_503_when_the_broker_cannot_be_reached(site: Site) -> None:
    """The broker is down (nothing listens on its port): the view answers 503 with the error, naming the broker
    without its password; the report is saved, marked as never started, with no run."""
    from reports.models import Report

    title = f"down-{uuid.uuid4().hex[:6]}"
    broker = f"redis://:sekrit-word@127.0.0.1:{free_port()}/0"
    env = {**os.environ, **site.env, "CELERY_BROKER_URL": broker, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); exec({VIEW_SCRIPT!r})", title],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == 503, out
    assert out["error"].startswith("cannot reach the broker redis://:**@127.0.0.1:"), out
    assert "sekrit-word" not in out["error"]
    report = Report.objects.get(title=title)
    assert (report.status, report.run_id) == ("not_started", "")


def test_an_event_emitted_in_a_transaction_is_published_at_commit_only(site: Site) -> None:
    from django.db import transaction

    from namel3ss_celery.integrations.django import emit_on_commit

    store = site.n3.events.store()
    start = store.newest()
    with transaction.atomic():
        kept = emit_on_commit(site.n3, "dataset_change", {"table": "reports"}, source="django")
        assert [e.event_id for _i, e in store.read(start)] == []  # not before the commit
    with pytest.raises(Rollback), transaction.atomic():
        dropped = emit_on_commit(site.n3, "dataset_change", {"table": "gone"}, source="django")
        raise Rollback
    ids = [e.event_id for _i, e in store.read(start) if e.source == "django"]
    assert ids == [kept] and dropped not in ids


EMITTING_VIEW_SCRIPT = """
import json, sys
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.test import RequestFactory
from django.views.decorators.http import require_POST
from namel3ss_celery.integrations.django import emit_on_commit
from reports.models import Report
from reports_site.celery import n3

@require_POST
def announce_report(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        report = Report.objects.create(title=request.POST["title"], body=request.POST["body"])
        data = {"table": request.POST["table"], "report_id": report.pk}
        event_id = emit_on_commit(n3, "dataset_change", data, source="django")
    return JsonResponse({"report": report.pk, "event": event_id}, status=202)

request = RequestFactory().post("/announce/", {"title": sys.argv[1], "body": "one two three", "table": sys.argv[2]})
response = announce_report(request)
print(json.dumps({"status": response.status_code, **json.loads(response.content)}))
n3.close()
"""


def test_a_view_that_emits_on_commit_starts_its_triggers_run_on_the_committed_row(site: Site, tmp_path: Path) -> None:
    """A web process with the program (``NAMEL3SS_CELERY_PROGRAM``, ``NAMEL3SS_CELERY_MATCH_EVENTS=emitter``)
    emits from a view in a transaction; at the commit the event is matched there and its trigger starts the
    workflow, whose steps read the row."""
    from reports.models import Report
    from reports.workflows import REPORT_WORKFLOW

    tag = uuid.uuid4().hex[:6]
    table = f"reports-{tag}"
    trigger = {
        "name": f"announced-{tag}",
        "event_type": "dataset_change",
        "trigger_target": "report",
        "filter_fields": {"table": table},
        "context_mapping": {"report_id": "data.report_id"},
    }
    program = tmp_path / "announce.json"
    program.write_text(json.dumps({"workflows": [REPORT_WORKFLOW], "event_triggers": [trigger]}))
    since = site.n3.events.store().newest()
    title = f"announced-{tag}"
    env = {
        **os.environ,
        **site.env,
        "PYTHONPATH": str(REPO),
        "NAMEL3SS_CELERY_PROGRAM": str(program),
        "NAMEL3SS_CELERY_MATCH_EVENTS": "emitter",  # the site's worker has no program: matched here
    }
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); exec({EMITTING_VIEW_SCRIPT!r})", title, table],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == 202, out
    (started,) = [
        e
        for _i, e in site.n3.events.store().read(since, count=1000)
        if e.event_type == "workflow_started" and e.data.get("trigger_event_id") == out["event"]
    ]
    result = site.n3.run(started.data["instance_id"]).get(timeout=60)
    assert result.overall_status == "completed", (result.error_message, site.worker.log())
    assert (result.outputs["count"]["report_id"], result.outputs["count"]["title"]) == (out["report"], title)
    report = Report.objects.get(pk=out["report"])
    assert (report.status, report.word_count) == ("ready", 3)  # the triggered run's second step wrote it
