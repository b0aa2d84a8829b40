"""Dedup claims made with an event's append, where it is emitted: the same answers as claims made one by one,
and none kept for a trigger an error kept from acting."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import Namel3ssCelery, SpecError

ORDER_KEY = {"dedupe_key": "data.order"}


def trigger(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "event_type": "custom", "trigger_target": "go", "source_config": ORDER_KEY} | more


@pytest.fixture
def n3() -> Namel3ssCelery:
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.namel3ss_celery = {"match_events": "emitter"}
    extension = Namel3ssCelery(app)

    @extension.step("noop")
    def noop(step: dict[str, Any], context: dict[str, Any]) -> None:
        return None

    return extension


def use(n3: Namel3ssCelery, *triggers: dict[str, Any]) -> None:
    n3.events.use_program(
        {"parallel_blocks": [{"name": "go", "steps": [{"target": "noop"}]}], "event_triggers": list(triggers)}
    )


def test_a_window_starts_one_run_per_key_and_a_trigger_without_one_starts_each_time(n3: Namel3ssCelery) -> None:
    use(n3, trigger("windowed", deduplicate_window=60), trigger("every"))
    for order in (1, 1, 2):
        n3.emit("custom", {"order": order})
    assert n3.events.counts == {"dispatched": 5, "duplicate": 1}


def test_two_triggers_of_one_name_are_refused_when_the_program_loads(n3: Namel3ssCelery) -> None:
    with pytest.raises(SpecError, match="two event triggers are named 'same'"):
        use(n3, trigger("same", deduplicate_window=60), trigger("same"))


def test_an_event_at_the_depth_limit_claims_nothing(n3: Namel3ssCelery) -> None:
    use(n3, trigger("windowed", deduplicate_window=60))
    looped = n3.events.event("custom", {"order": 1})
    looped.metadata["depth"] = 10**6
    n3.events.publish(looped)
    n3.emit("custom", {"order": 1})  # its window was not taken by the refused one
    assert n3.events.counts == {"loop": 1, "dispatched": 1}


def test_a_trigger_an_error_kept_from_acting_keeps_no_claim(
    n3: Namel3ssCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first trigger's start fails: emit raises, and the second trigger was never reached. Neither keeps
    its claim: emitted again, the event starts both."""
    use(n3, trigger("first", deduplicate_window=60), trigger("second", deduplicate_window=60))
    start = n3.events.firing.start
    failures = [RuntimeError("the broker went away")]

    def fails_once(program: Any, name: str, context: dict[str, Any]) -> str:
        if failures:
            raise failures.pop()
        return start(program, name, context)

    monkeypatch.setattr(n3.events.firing, "start", fails_once)
    with pytest.raises(RuntimeError, match="the broker went away"):
        n3.emit("custom", {"order": 7})
    n3.emit("custom", {"order": 7})
    assert n3.events.counts == {"dispatched": 2}


def test_a_delayed_trigger_delivered_twice_starts_one_run(n3: Namel3ssCelery) -> None:
    """The countdown task ``n3.events.fire`` delivered again (Redis redelivers an unacknowledged message after
    its visibility timeout): the second delivery starts nothing."""
    use(n3, trigger("later", trigger_delay=30))
    fire = n3.app.tasks["n3.events.fire"]
    event = n3.events.event("custom", {"order": 1})
    context = {"trigger_event": event.to_dict()}
    first = fire.apply(args=("later", context)).get()
    assert fire.apply(args=("later", context)).get() == "duplicate"
    assert first != "duplicate" and n3.events.counts == {"dispatched": 1, "duplicate": 1}
    other = {"trigger_event": n3.events.event("custom", {"order": 1}).to_dict()}
    assert fire.apply(args=("later", other)).get() not in ("duplicate", None)  # another event: its own run


def test_a_delayed_trigger_whose_start_failed_starts_on_its_next_delivery(
    n3: Namel3ssCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(n3, trigger("later", trigger_delay=30))
    start = n3.events.firing.start
    failures = [RuntimeError("the broker went away")]

    def fails_once(program: Any, name: str, context: dict[str, Any]) -> str:
        if failures:
            raise failures.pop()
        return start(program, name, context)

    monkeypatch.setattr(n3.events.firing, "start", fails_once)
    fire = n3.app.tasks["n3.events.fire"]
    context = {"trigger_event": n3.events.event("custom", {"order": 1}).to_dict()}
    with pytest.raises(RuntimeError, match="the broker went away"):
        fire.apply(args=("later", context), throw=True)
    assert fire.apply(args=("later", context)).get() != "duplicate"
    assert n3.events.counts == {"dispatched": 1}


def test_a_per_hour_limit_drops_the_excess_and_says_so(n3: Namel3ssCelery) -> None:
    use(n3, trigger("hourly", max_triggers_per_minute=10, max_triggers_per_hour=2))
    for order in range(4):
        n3.emit("custom", {"order": order})
    assert n3.events.counts == {"dispatched": 2, "rate_limited": 2}
    alerts = [e for _i, e in n3.events.store().read() if e.event_type == "system_alert"]
    assert [(a.data["reason"], a.data["detail"]) for a in alerts] == [
        ("rate_limited", "more than 2 per hour: dropped")
    ] * 2


def test_a_match_task_delivered_again_acts_once_per_trigger_and_handler(n3: Namel3ssCelery) -> None:
    """``n3.events.match`` is acknowledged after it ran and delivered again when its worker is lost mid-way;
    a second delivery of one event starts nothing more, even for a trigger without a dedup window."""
    use(n3, trigger("every"))
    match = n3.app.tasks["n3.events.match"]
    assert match.acks_late and match.reject_on_worker_lost
    event = n3.events.event("custom", {"order": 1})
    first = match.apply(args=(event.to_dict(),)).get()
    again = match.apply(args=(event.to_dict(),)).get()
    assert first["every"] not in ("duplicate", None) and again == {"every": "duplicate"}
    other = match.apply(args=(n3.events.event("custom", {"order": 1}).to_dict(),)).get()
    assert other["every"] != "duplicate"  # another event with the same data: its own run
    assert n3.events.counts == {"dispatched": 2, "duplicate": 1}


def test_a_duplicate_delivered_again_after_its_window_passed_is_still_a_duplicate(n3: Namel3ssCelery) -> None:
    """A duplicate keeps its once claim: its match task, delivered again once the window has passed (Redis
    redelivers after its visibility timeout), does not start the run the window refused."""
    use(n3, trigger("windowed", deduplicate_window=60))
    match = n3.app.tasks["n3.events.match"]
    assert match.apply(args=(n3.events.event("custom", {"order": 1}).to_dict(),)).get()["windowed"] != "duplicate"
    late = n3.events.event("custom", {"order": 1}).to_dict()
    assert match.apply(args=(late,)).get() == {"windowed": "duplicate"}
    n3.events.store().release(["dedupe:windowed:1"])  # the window passed
    assert match.apply(args=(late,)).get() == {"windowed": "duplicate"}
