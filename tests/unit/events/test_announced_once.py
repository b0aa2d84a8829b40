"""A run's end announced again (a settle resumed after its process died) is one event: one entry in the
stream, one trigger start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from namel3ss_celery.events import lifecycle
from namel3ss_celery.events.matching import compile_triggers
from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.events.stream import MemoryEventStore
from namel3ss_celery.events.triggering import TriggerFiring
from namel3ss_celery.spec import load_program


def ended(run_id: str) -> Event:
    data = {"workflow_name": "w", "instance_id": run_id, "status": "completed"}
    return Event.new(
        EventType.WORKFLOW_COMPLETED,
        lifecycle.SOURCE,
        data,
        metadata={"depth": 0, lifecycle.ONCE: True},
        event_id=lifecycle.ended_event_id(run_id),
    )


def test_a_runs_end_has_the_same_id_wherever_it_is_announced() -> None:
    assert lifecycle.ended_event_id("run-1") == lifecycle.ended_event_id("run-1")
    assert lifecycle.ended_event_id("run-1") != lifecycle.ended_event_id("run-2")


def test_the_stream_takes_an_event_announced_again_once() -> None:
    store = MemoryEventStore()
    assert store.append_once(ended("run-1")) is not None
    assert store.append_once(ended("run-1")) is None
    assert store.append_once(ended("run-2")) is not None
    assert [e.data["instance_id"] for _i, e in store.read()] == ["run-1", "run-2"]


def test_a_trigger_starts_once_for_an_event_announced_again_and_every_time_for_others() -> None:
    program = load_program(
        {
            "parallel_blocks": [{"name": "b", "steps": [{"target": "x"}]}],
            "event_triggers": [
                {"name": "after", "event_type": "workflow_completed", "trigger_target": "b"},
            ],
        }
    )
    (trigger,) = compile_triggers(program)
    started: list[dict[str, Any]] = []

    def publish(plan: Any, context: dict[str, Any]) -> Any:
        started.append(context)
        return SimpleNamespace(id=f"run-{len(started)}")

    store = MemoryEventStore()
    firing = TriggerFiring(None, lambda: store, publish, lambda _program, _target, _background: SimpleNamespace())
    assert firing.fire(program, trigger, ended("run-1")) == "run-1"
    assert firing.fire(program, trigger, ended("run-1")) == "duplicate"
    plain = Event.new(EventType.WORKFLOW_COMPLETED, "app", {"status": "completed"})
    assert firing.fire(program, trigger, plain) == "run-2"
    assert firing.fire(program, trigger, plain) == "run-3"  # no dedupe_window: a plain event is not deduplicated
