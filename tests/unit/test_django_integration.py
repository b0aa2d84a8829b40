"""``dispatch_on_commit`` and the Django settings mapping, without a broker.

The app here runs under ``task_always_eager`` (a user's own test suite): a
publish runs the run in this process and records it at once, so "the run is
known" means "it was published". The real worker, after a real commit, is in
tests/integration/test_django.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import ConfigurationError, Namel3ssCelery, Settings, SpecError, UnknownRun, UnknownTarget
from namel3ss_celery.integrations.django import PendingRun, Publication, dispatch_on_commit
from tests.django_example import setup_django

pytestmark = pytest.mark.timeout(60)

ECHO = {"name": "echo", "steps": [{"name": "echo", "target": "django_unit.echo"}]}


class Rollback(Exception):
    """Raised to leave an atomic block by rolling it back."""


@pytest.fixture(scope="module")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Django configured as the example project, on a migrated SQLite file."""
    from django.db import connections

    yield setup_django(tmp_path_factory.mktemp("django") / "db.sqlite3")
    connections.close_all()


def eager_n3(cls: type[Namel3ssCelery] = Namel3ssCelery) -> Namel3ssCelery:
    app = Celery("django_unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    n3 = cls(app)

    @n3.step("django_unit.echo")
    def echo(step: dict[str, Any], context: dict[str, Any]) -> Any:
        return context.get("value")

    return n3


@pytest.fixture
def n3(django_db: Path) -> Iterator[Namel3ssCelery]:
    n3 = eager_n3()
    yield n3
    n3.close()


def published(n3: Namel3ssCelery, run: PendingRun) -> bool:
    return n3.store.run_record(run.id) is not None


def test_nothing_is_published_before_the_commit(n3: Namel3ssCelery) -> None:
    from django.db import transaction

    with transaction.atomic():
        run = dispatch_on_commit(n3, ECHO, context={"value": 7})
        assert run.publication is Publication.PENDING
        assert not published(n3, run)
        with pytest.raises(UnknownRun):
            n3.run(run.id)
        with pytest.raises(UnknownRun):
            run.status()
        with pytest.raises(ConfigurationError, match="wait for it after the atomic block"):
            run.get(timeout=60)  # at once: waiting here could only time out
    assert run.publication is Publication.PUBLISHED and run.published
    assert n3.run(run.id).get(timeout=10).final_result == {"echo": 7}
    assert run.get(timeout=10).overall_status == "completed"


def test_a_rollback_publishes_nothing(n3: Namel3ssCelery) -> None:
    from django.db import transaction

    with pytest.raises(Rollback), transaction.atomic():
        run = dispatch_on_commit(n3, ECHO, context={"value": 1})
        raise Rollback
    assert run.publication is Publication.DISCARDED
    assert not published(n3, run)
    with pytest.raises(UnknownRun):
        run.get(timeout=60)  # at once: a discarded run never appears


def test_a_rolled_back_savepoint_discards_only_its_own_runs(n3: Namel3ssCelery) -> None:
    from django.db import transaction

    with transaction.atomic():
        kept = dispatch_on_commit(n3, ECHO, context={"value": "kept"})
        with pytest.raises(Rollback), transaction.atomic():
            dropped = dispatch_on_commit(n3, ECHO, context={"value": "dropped"})
            raise Rollback
        assert dropped.publication is Publication.DISCARDED
        assert kept.publication is Publication.PENDING
    assert kept.get(timeout=10).final_result == {"echo": "kept"}
    assert dropped.publication is Publication.DISCARDED and not published(n3, dropped)


def test_outside_an_atomic_block_it_publishes_at_once(n3: Namel3ssCelery) -> None:
    run = dispatch_on_commit(n3, ECHO, context={"value": 3})
    assert run.publication is Publication.PUBLISHED
    assert published(n3, run)
    assert run.get(timeout=10).final_result == {"echo": 3}


@pytest.mark.parametrize(
    ("spec", "context", "error", "path"),
    [
        ({**ECHO, "strategy": "sometimes"}, {}, SpecError, "strategy"),
        ({"name": "x", "steps": [{"target": "django_unit.missing"}]}, {}, UnknownTarget, None),
        (ECHO, {"value": object()}, SpecError, "context"),
        (ECHO, {"value": float("nan")}, SpecError, "context"),
    ],
)
def test_bad_input_raises_in_the_view_and_registers_nothing(
    n3: Namel3ssCelery, spec: dict[str, Any], context: dict[str, Any], error: type[Exception], path: str | None
) -> None:
    from django.db import transaction

    with transaction.atomic():
        with pytest.raises(error) as raised:
            dispatch_on_commit(n3, spec, context=context)
        assert transaction.get_connection().run_on_commit == []
    if path is not None:
        assert getattr(raised.value, "path", "").endswith(path)


def test_the_context_is_the_one_given_at_dispatch(n3: Namel3ssCelery) -> None:
    from django.db import transaction

    context = {"value": ["first"]}
    with transaction.atomic():
        run = dispatch_on_commit(n3, ECHO, context=context)
        context["value"].append("changed later")
    assert run.get(timeout=10).final_result == {"echo": ["first"]}


class BrokerDown(Namel3ssCelery):
    """A Namel3ssCelery whose publishing fails, as with an unreachable broker."""

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError("the broker is unreachable", setting="broker_url")


@pytest.mark.parametrize("robust", [False, True])
def test_a_publishing_error_after_the_commit_is_kept_on_the_handle(django_db: Path, robust: bool) -> None:
    from django.db import transaction
    from reports.models import Report

    n3 = eager_n3(BrokerDown)
    try:
        title = f"broker-down-{robust}"
        if robust:  # Django logs the error and the commit goes on
            with transaction.atomic():
                Report.objects.create(title=title)
                run = dispatch_on_commit(n3, ECHO, robust=True)
        else:  # the error reaches the caller, after the commit
            with pytest.raises(ConfigurationError), transaction.atomic():
                Report.objects.create(title=title)
                run = dispatch_on_commit(n3, ECHO)
        assert Report.objects.filter(title=title).exists()
        assert run.publication is Publication.FAILED
        assert isinstance(run.error, ConfigurationError)
        with pytest.raises(UnknownRun):
            run.get(timeout=60)
    finally:
        n3.close()


def test_namel3ss_celery_is_read_from_django_settings_through_the_celery_namespace(
    django_db: Path, clean_env: None
) -> None:
    from django.conf import settings

    app = Celery("reports_site", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    read = Settings.from_app(app)
    assert read.step_modules == ("reports.steps",)  # NAMEL3SS_CELERY, which the namespace filters out of app.conf
    assert read.broker_url == settings.CELERY_BROKER_URL  # CELERY_BROKER_URL, through the namespace
    assert read.result_backend == settings.CELERY_RESULT_BACKEND


def test_a_namespaced_config_object_gives_its_namel3ss_celery_mapping(clean_env: None) -> None:
    class Config:
        CELERY_BROKER_URL = "redis://127.0.0.1:6379/5"
        NAMEL3SS_CELERY = {"NAMEL3SS_CELERY_STEP_MODULES": "a.steps, b.steps", "program": "prog.yaml"}

    app = Celery("proj", set_as_current=False)
    app.config_from_object(Config, namespace="CELERY")
    read = Settings.from_app(app)
    assert (read.step_modules, read.program, read.broker_url) == (
        ("a.steps", "b.steps"),
        "prog.yaml",
        Config.CELERY_BROKER_URL,
    )


def test_the_example_workflow_reads_the_committed_row_in_a_users_eager_test_suite(
    django_db: Path, clean_env: None
) -> None:
    from django.db import transaction
    from reports.models import Report
    from reports.workflows import REPORT_WORKFLOW

    app = Celery("reports_site", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_always_eager = True
    n3 = Namel3ssCelery(app)  # eager: runs and their records stay in this process, no broker is used
    try:
        with transaction.atomic():
            report = Report.objects.create(title="eager", body="one two three")
            run = dispatch_on_commit(n3, REPORT_WORKFLOW, context={"report_id": report.pk})
        result = run.get(timeout=10)
        assert result.overall_status == "completed", result.error_message
        assert result.outputs["count"]["title"] == "eager"
        report.refresh_from_db()
        assert (report.status, report.word_count) == ("ready", 3)
    finally:
        n3.close()
