"""What a run's event looks like in Celery's event system, and which processes send it."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery, signals

from namel3ss_celery.events.celery_events import CeleryEvents, celery_event_fields, celery_event_type
from namel3ss_celery.events.model import Event, EventType


def ended() -> Event:
    data = {"workflow_name": "report", "instance_id": "run-1", "status": "failed", "error": "boom"}
    return Event.new(EventType.WORKFLOW_COMPLETED, "namel3ss-celery", data, correlation_id="c-1")


def test_a_workflow_event_is_a_celery_event_of_the_n3_group_with_its_run_and_status() -> None:
    event = ended()
    assert celery_event_type(event) == "n3-workflow-completed"
    fields = celery_event_fields(event)
    assert fields["run_id"] == "run-1" and fields["workflow"] == "report" and fields["status"] == "failed"
    assert fields["event_id"] == event.event_id and fields["correlation_id"] == "c-1"
    assert fields["data"]["error"] == "boom"
    assert "type" not in fields  # Celery's own field


def test_sent_where_the_app_sends_task_events_or_its_worker_was_started_with_them() -> None:
    app = Celery("events-here", broker="memory://", set_as_current=False)
    events = CeleryEvents(app)
    assert not events.enabled
    app.conf.worker_send_task_events = True
    assert events.enabled
    # a worker of this app started without -E: its processes do not send them, whatever the setting
    signals.celeryd_after_setup.send(
        sender="w1@host", instance=SimpleNamespace(app=app, task_events=False, hostname="w1@host"), conf=app.conf
    )
    assert not events.enabled
    signals.celeryd_after_setup.send(
        sender="w1@host", instance=SimpleNamespace(app=app, task_events=True, hostname="w1@host"), conf=app.conf
    )
    assert events.enabled and events.hostname == "w1@host"


def test_another_apps_worker_changes_nothing() -> None:
    app = Celery("events-mine", broker="memory://", set_as_current=False)
    other = Celery("events-other", broker="memory://", set_as_current=False)
    events = CeleryEvents(app)
    signals.celeryd_after_setup.send(
        sender="w2@host", instance=SimpleNamespace(app=other, task_events=True, hostname="w2@host"), conf=other.conf
    )
    assert not events.enabled and events.hostname is None
