"""A trigger's ``execution_mode``: ``sync`` waits where the event is emitted (bounded, never inside a worker),
``background`` starts its run on the lowest priority, ``async`` neither."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import ConfigurationError, EventNotMatched, Namel3ssCelery, SpecError, WaitTimeout
from namel3ss_celery.events.beat import Firing
from namel3ss_celery.events.execution import DEFAULT_SYNC_TIMEOUT
from namel3ss_celery.events.matching import compile_triggers
from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.plan.model import Plan
from namel3ss_celery.spec import load_program
from namel3ss_celery.worker.store import MemoryStore

BLOCK = {"name": "go", "steps": [{"target": "noop"}, {"name": "urgent", "target": "noop", "priority": 7}]}


def trigger(mode: str, **more: Any) -> dict[str, Any]:
    return {"name": mode, "event_type": "custom", "trigger_target": "go", "execution_mode": mode} | more


@pytest.fixture(params=["workers", "emitter"])
def n3(request: pytest.FixtureRequest) -> Any:
    """An eager app (its ``n3.events.match`` task runs in this process), matching the events it emits on the
    workers (the default), or here."""
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    app.conf.namel3ss_celery = {"match_events": request.param}
    extension = Namel3ssCelery(app)
    extension.step("noop")(lambda step, context: None)
    yield extension
    extension.close()


class Waited:
    """The runs triggers start, each a handle whose ``get`` says how long it was asked to wait: the handle
    the trigger's dispatch gave (matched here), or the one the emitter asked for by id (matched on a
    worker)."""

    def __init__(self, n3: Namel3ssCelery, fails: BaseException | None = None) -> None:
        self.plans: list[Plan] = []
        self.waits: list[float] = []
        self._publish = n3.events.firing._publish
        self._run = n3.events._run
        self._fails = fails
        n3.events.firing._publish = self.publish
        n3.events._run = lambda run_id: self.watched(self._run(run_id))

    def publish(self, plan: Plan, context: dict[str, Any]) -> Any:
        self.plans.append(plan)
        return self.watched(self._publish(plan, context))

    def watched(self, handle: Any) -> Any:
        waited, fails = self.waits, self._fails

        class Handle:
            id = handle.id

            def get(self, timeout: float) -> Any:
                waited.append(timeout)
                if fails is not None:
                    raise fails
                return handle.get(timeout)

        return Handle()


def use(n3: Namel3ssCelery, *triggers: dict[str, Any]) -> None:
    n3.events.use_program({"parallel_blocks": [BLOCK], "event_triggers": list(triggers)})


def test_a_sync_trigger_makes_emit_wait_for_its_run_within_its_timeout_and_hands_back_its_result(
    n3: Namel3ssCelery,
) -> None:
    use(n3, trigger("sync", source_config={"sync_timeout_seconds": 20}), trigger("async"))
    runs = Waited(n3)
    event = n3.emit("custom", {"n": 1})
    assert len(runs.plans) == 2 and len(runs.waits) == 1  # the async trigger's run is not waited for
    assert 19 < runs.waits[0] <= 20
    assert n3.events.counts == {"dispatched": 2}
    assert list(event.results) == ["sync"]
    assert event.results["sync"].overall_status == "completed"
    assert event.results["sync"].blocks["go"].final_result == {"step_0": None, "urgent": None}


def test_a_sync_trigger_waits_a_bounded_time_by_default() -> None:
    program = load_program({"parallel_blocks": [BLOCK], "event_triggers": [trigger("sync"), trigger("async")]})
    assert [t.wait_seconds for t in compile_triggers(program)] == [DEFAULT_SYNC_TIMEOUT, None]


def test_a_sync_run_that_does_not_end_in_time_is_a_wait_timeout_after_the_event_is_published(
    n3: Namel3ssCelery,
) -> None:
    use(n3, trigger("sync", source_config={"sync_timeout_seconds": 1}))
    Waited(n3, fails=WaitTimeout("run-1", 1.0, "running"))
    with pytest.raises(WaitTimeout):
        n3.emit("custom", {"n": 1})
    (published,) = [e for _i, e in n3.events.store().read() if e.event_type == EventType.CUSTOM]
    assert published.data == {"n": 1} and n3.events.counts == {"dispatched": 1}


def test_a_sync_trigger_is_refused_inside_a_celery_task_before_anything_is_published(n3: Namel3ssCelery) -> None:
    use(n3, trigger("sync"))

    @n3.app.task(name="proj.emits", shared=False)
    def emits() -> None:
        n3.emit("custom", {"n": 1})

    with pytest.raises(ConfigurationError, match="inside a step or a Celery task, where waiting can deadlock"):
        emits.delay()
    assert n3.events.store().newest() == "0" and n3.events.counts == {}


def test_a_sync_trigger_that_started_no_run_has_no_result(n3: Namel3ssCelery) -> None:
    use(n3, trigger("sync", deduplicate_window=60, source_config={"dedupe_key": "data.n"}))
    first = n3.emit("custom", {"n": 1})
    again = n3.emit("custom", {"n": 1})
    assert list(first.results) == ["sync"] and again.results == {}
    assert n3.events.counts == {"dispatched": 1, "duplicate": 1}


def test_a_sync_trigger_matched_on_a_worker_that_never_comes_is_a_wait_timeout() -> None:
    """A lazy (not eager) app whose embedded worker is not started: the match task waits in the broker, and
    the emitter gives up, saying so."""
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    n3 = Namel3ssCelery(app)
    try:
        n3.step("noop")(lambda step, context: None)
        use(n3, trigger("sync", source_config={"sync_timeout_seconds": 0.2}))
        n3.events.before_publish = lambda: None
        with pytest.raises(EventNotMatched, match="no worker answered within 0.2s") as info:
            n3.emit("custom", {"n": 1})
        assert isinstance(info.value, WaitTimeout) and info.value.triggers == ["sync"]
        assert [e.event_type for _i, e in n3.events.store().read()] == [EventType.CUSTOM]
        assert n3.app.control.purge() >= 1  # the match task (the memory broker outlives this app)
    finally:
        n3.close()


def test_a_sync_trigger_unknown_to_the_worker_that_matched_the_event_is_an_error(n3: Namel3ssCelery) -> None:
    """The emitter's program has a sync trigger that the worker's has not: emit says so, not an empty result."""
    use(n3, trigger("sync"))
    n3.events.match = lambda event, **_: {}  # type: ignore[method-assign]
    n3.events.match_here = False
    with pytest.raises(ConfigurationError, match="found no trigger 'sync' that matches it") as info:
        n3.emit("custom", {"n": 1})
    assert info.value.setting == "NAMEL3SS_CELERY_PROGRAM"


def test_a_sync_trigger_matched_on_a_worker_starts_nothing_and_says_why(n3: Namel3ssCelery) -> None:
    """What ``n3.events.match`` does on a worker, for an event emitted where the program is unknown."""
    use(n3, trigger("sync"), trigger("async"))
    runs = Waited(n3)
    n3.events.match(Event.new(EventType.CUSTOM, "elsewhere", {"n": 1}))
    assert len(runs.plans) == 1 and runs.waits == []
    assert n3.events.counts == {"sync_not_waited": 1, "dispatched": 1}
    (alert,) = [e for _i, e in n3.events.store().read() if e.event_type == EventType.SYSTEM_ALERT]
    assert alert.data["reason"] == "sync_not_waited" and "does not wait" in alert.data["detail"]


def test_a_background_trigger_runs_its_steps_on_the_lowest_priority(n3: Namel3ssCelery) -> None:
    use(n3, trigger("background"), trigger("async"))
    runs = Waited(n3)
    n3.emit("custom", {"n": 1})
    background, plain = ([step.priority for step in plan.nodes[0].block.steps] for plan in runs.plans)
    assert background == [0, 7]  # a step's own priority stays
    assert plain == [None, 7]
    assert runs.waits == []  # nobody waits for either


def test_a_background_workflow_runs_its_step_nodes_on_the_lowest_priority(n3: Namel3ssCelery) -> None:
    n3.events.use_program(
        {
            "parallel_blocks": [BLOCK],
            "workflows": [
                {"name": "w", "steps": [{"name": "a", "block": "go"}, {"name": "b", "target": "noop"}]},
            ],
            "event_triggers": [trigger("background", trigger_target="w")],
        }
    )
    runs = Waited(n3)
    n3.emit("custom", {"n": 1})
    (plan,) = runs.plans
    assert {node.name: [s.priority for s in node.block.steps] for node in plan.nodes} == {"a": [0, 7], "b": [0]}


def test_a_background_schedule_runs_its_steps_on_the_lowest_priority() -> None:
    program = load_program(
        {
            "parallel_blocks": [BLOCK],
            "event_triggers": [
                {
                    "name": "tick",
                    "event_type": "schedule",
                    "trigger_target": "go",
                    "source_config": {"interval_seconds": 5},
                    "execution_mode": "background",
                }
            ],
        }
    )
    dispatched: list[Any] = []
    store = MemoryStore()

    def dispatch(spec: Any, context: dict[str, Any], workflow: str | None = None) -> Any:
        dispatched.append(spec)
        return type("Handle", (), {"id": "run-1"})()

    firing = Firing(lambda: store, lambda: program, dispatch, lambda event: None)
    assert firing.fire("tick", "go", {"interval_seconds": 5}, {}, 1000.0) == "run-1"
    (spec,) = dispatched
    assert [s.priority for s in spec.parallel_blocks[0].steps] == [0, 7]


@pytest.mark.parametrize(
    ("event_type", "more"),
    [("schedule", {"source_config": {"interval_seconds": 5}}), ("task_failed", {})],
)
def test_sync_is_refused_at_load_where_only_workers_match(n3: Namel3ssCelery, event_type: str, more: Any) -> None:
    with pytest.raises(SpecError) as info:
        use(n3, trigger("sync", event_type=event_type, **more))
    assert info.value.path == "event_triggers[0].execution_mode"
    assert "matched inside workers, where waiting can deadlock" in str(info.value)
