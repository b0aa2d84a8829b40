"""A run's end announced again (a settle resumed after its process died) is one event: one entry in the
stream, one trigger start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery

from namel3ss_celery import Namel3ssCelery
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


def test_a_blocks_events_have_ids_of_their_own_run_node_and_kind() -> None:
    from namel3ss_celery.compiler.planning import make_plan
    from namel3ss_celery.events.lifecycle import block_moved
    from namel3ss_celery.results import ParallelExecutionResult, RunStatus
    from namel3ss_celery.spec import load_any

    plan = make_plan(
        load_any(
            {"name": "w", "steps": [{"name": "a", "target": "t"}, {"name": "b", "target": "t", "depends_on": ["a"]}]}
        )
    )
    result = ParallelExecutionResult(
        "a", "all", 1, failed_tasks=1, overall_status=RunStatus.FAILED, error_message="x broke"
    )
    started, ended = block_moved("r", plan, "a", None, None), block_moved("r", plan, "a", result, None)
    assert (str(started.event_type), str(ended.event_type)) == ("block_started", "block_completed")
    assert started.event_id == block_moved("r", plan, "a", None, None).event_id  # announced again: the same event
    assert len({started.event_id, ended.event_id, block_moved("r", plan, "b", None, None).event_id}) == 3
    assert ended.data["status"] == "failed" and ended.data["error"] == "x broke" and ended.data["node"] == "a"


def test_a_stream_entry_of_a_later_release_is_passed_over_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from namel3ss_celery.events.stream import readable

    later = {"event": json.dumps({"event_id": "e1", "event_type": "from_a_later_release", "data": {}})}
    caplog.set_level(logging.WARNING, logger="namel3ss_celery")
    logger = logging.getLogger("namel3ss_celery")  # whatever another test did to its propagation
    logger.addHandler(caplog.handler)
    try:
        assert readable("5-0", later) is None
    finally:
        logger.removeHandler(caplog.handler)
    assert "event 5-0 of the stream cannot be read here" in caplog.text
    known = {"event": json.dumps({"event_id": "e2", "event_type": "custom", "data": {"a": 1}})}
    event = readable("6-0", known)
    assert event is not None and event.data == {"a": 1}


class Flaky:
    """An event store whose first ``failures`` writes find Redis away, as during a restart."""

    def __init__(self, store: MemoryEventStore, failures: int) -> None:
        self.store, self.failures = store, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_once(self, event: Event) -> str | None:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Connection refused")
        return self.store.append_once(event)


def test_a_runs_end_announced_while_redis_restarts_is_announced_once_it_is_back() -> None:
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    n3 = Namel3ssCelery(app)
    try:
        n3.step("t")(lambda step, context: None)
        plan = n3.plan({"name": "b", "steps": [{"target": "t"}]})
        final = n3.dispatch({"name": "b", "steps": [{"target": "t"}]}).get(timeout=5)
        store = MemoryEventStore()
        n3.events._store_made = Flaky(store, failures=2)  # type: ignore[assignment]
        n3.events.run_ended("run-away", plan, final)
        (event,) = [e for _i, e in store.read()]
        assert event.event_type == EventType.WORKFLOW_COMPLETED and event.data["instance_id"] == "run-away"
    finally:
        n3.close()


def test_a_runs_end_whose_follow_up_failed_to_start_starts_it_when_announced_again() -> None:
    """The store fails as the ``workflow_completed`` trigger starts its run, after the event is in the stream:
    the trigger gives its claims back, the announcement is tried again, and the follow-up starts once."""
    from namel3ss_celery.errors import StoreUnavailable

    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.namel3ss_celery = {"match_events": "emitter"}  # matched in this process, which announces it
    n3 = Namel3ssCelery(app)
    try:
        n3.step("t")(lambda step, context: None)
        block = {"name": "b", "steps": [{"target": "t"}]}
        n3.events.use_program(
            {
                "parallel_blocks": [block],
                "event_triggers": [{"name": "after", "event_type": "workflow_completed", "trigger_target": "b"}],
            }
        )
        plan = n3.plan(block)
        final = n3.dispatch(block).get(timeout=5)
        counts_before = dict(n3.events.counts)
        publish, failures = n3.events.firing._publish, [StoreUnavailable("the store did not answer")]

        def fails_once(plan: Any, context: dict[str, Any]) -> Any:
            if failures:
                raise failures.pop()
            return publish(plan, context)

        n3.events.firing._publish = fails_once
        n3.events.run_ended("run-away", plan, final)
        assert not failures  # it did fail once
        ended = [e for _i, e in n3.events.store().read() if e.data.get("instance_id") == "run-away"]
        assert [e.event_type for e in ended] == [EventType.WORKFLOW_COMPLETED]
        started = n3.events.counts.get("dispatched", 0) - counts_before.get("dispatched", 0)
        assert started == 1 and n3.events.counts.get("duplicate", 0) == counts_before.get("duplicate", 0)
    finally:
        n3.close()
