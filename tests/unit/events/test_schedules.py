"""Schedules: bad ones refused when the program loads, naming the field; slots; beat entries; one firing per
slot; ``namel3ss-celery beat`` refusing a bad program."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import Namel3ssCelery
from namel3ss_celery.cli import main
from namel3ss_celery.errors import SpecError, UnknownTarget
from namel3ss_celery.events.beat import (
    FIRED_AT,
    SCHEDULE_TASK,
    Firing,
    beat_entry,
    merge_program_schedules,
    program_entries,
    stamp_fired_at,
)
from namel3ss_celery.events.model import Event
from namel3ss_celery.events.schedules import AlignedInterval, Schedule, ZonedCrontab, parse_schedule
from namel3ss_celery.spec import load_program
from namel3ss_celery.worker.store import MemoryStore

PATH = "event_triggers[1].source_config"


def program(config: Any, **trigger: Any) -> Any:
    schedule = {"name": "tick", "event_type": "schedule", "trigger_target": "b", "source_config": config}
    return load_program(
        {
            "parallel_blocks": [{"name": "b", "steps": [{"target": "x"}]}],
            "workflows": [{"name": "w", "steps": [{"name": "s", "block": "b"}]}],
            "event_triggers": [{"name": "other", "event_type": "custom", "trigger_target": "w"}, schedule | trigger],
        }
    )


@pytest.fixture
def n3() -> Any:
    found = Namel3ssCelery(Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False))
    found.step("x")(lambda step, context: None)
    yield found
    found.close()


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        ({"cron": "* * * *"}, f"{PATH}.cron", "five fields"),
        ({"cron": "* * * * * *"}, f"{PATH}.cron", "five fields"),
        ({"cron": "61 * * * *"}, f"{PATH}.cron", "minute field '61'"),
        ({"cron": "*/5 25 * * *"}, f"{PATH}.cron", "hour field '25'"),
        ({"cron": "0 0 0 * *"}, f"{PATH}.cron", "day_of_month field '0'"),
        ({"cron": "0 0 * 13 *"}, f"{PATH}.cron", "month_of_year field '13'"),
        ({"cron": "0 0 * * 9"}, f"{PATH}.cron", "day_of_week field '9'"),
        ({"cron": "*/0 * * * *"}, f"{PATH}.cron", "minute field '*/0'"),
        ({"cron": "every day"}, f"{PATH}.cron", "five fields"),
        ({"cron": 5}, f"{PATH}.cron", "a cron line"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, f"{PATH}.timezone", "unknown time zone"),
        ({"cron": "* * * * *", "timezone": ""}, f"{PATH}.timezone", "IANA"),
        ({"interval_seconds": 0}, f"{PATH}.interval_seconds", "more than 0"),
        ({"interval_seconds": -5}, f"{PATH}.interval_seconds", "more than 0"),
        ({"interval_seconds": "30"}, f"{PATH}.interval_seconds", "a number of seconds"),
        ({"interval_seconds": True}, f"{PATH}.interval_seconds", "a number of seconds"),
        ({"interval_seconds": float("nan")}, f"{PATH}.interval_seconds", "a number of seconds"),
        ({"interval_seconds": 1e12}, f"{PATH}.interval_seconds", "at most"),
        ({"interval_seconds": 30, "timezone": "UTC"}, f"{PATH}.timezone", "goes with cron"),
        ({}, PATH, "exactly one of cron and interval_seconds"),
        ({"cron": "* * * * *", "interval_seconds": 30}, f"{PATH}.cron", "exactly one"),
        ({"every": 30}, f"{PATH}.every", "cron (with an optional timezone) or interval_seconds"),
    ],
)
def test_a_bad_schedule_is_refused_when_the_program_loads(n3: Any, config: Any, path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        n3.plan(program(config), workflow="w")
    assert info.value.path == path and message in str(info.value)
    with pytest.raises(SpecError) as info:  # a worker loading it (NAMEL3SS_CELERY_PROGRAM) refuses it too
        n3.events.use_program(program(config))
    assert info.value.path == path


@pytest.mark.parametrize(
    "config",
    [
        {"cron": "*/5 * * * *"},
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"},
        {"cron": "30 2 1 1,7 *"},
        {"interval_seconds": 30},
        {"interval_seconds": 0.5},
    ],
)
def test_a_good_schedule_loads_and_runs_its_target(n3: Any, config: Any) -> None:
    n3.plan(program(config), workflow="w")  # event_type schedule is supported now


def test_a_schedule_names_a_workflow_or_block_of_its_program(n3: Any) -> None:
    with pytest.raises(SpecError) as info:
        n3.plan(program({"interval_seconds": 5}, trigger_target="nowhere"), workflow="w")
    assert info.value.path == "event_triggers[1].trigger_target"


def test_interval_slots_are_epoch_multiples_the_same_for_every_beat() -> None:
    every = parse_schedule({"interval_seconds": 30})
    assert every.slot(3000.0) == 100 and every.slot(3000.004) == 100 and every.slot(3028.5) == 100
    assert every.slot(2999.2) == 100  # a clock a little ahead still names the slot it is due for
    assert every.slot(3030.01) == 101
    assert every.slot_start(101) == 3030.0
    short = parse_schedule({"interval_seconds": 1})
    assert short.slot(10.0) == short.slot(10.6) == 10 and short.slot(9.8) == 10  # skew tolerance: a quarter
    assert short.claim_ttl == 60 and parse_schedule({"interval_seconds": 3600}).claim_ttl == 3 * 3600


def test_cron_slots_are_the_scheduled_minute() -> None:
    cron = parse_schedule({"cron": "*/5 * * * *"})
    minute = datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc).timestamp()
    assert cron.slot(minute + 0.01) == cron.slot(minute + 40) == cron.slot(minute - 0.5) == int(minute)
    assert cron.slot_start(cron.slot(minute + 3)) == minute


def test_an_aligned_interval_is_due_at_epoch_multiples() -> None:
    app = Celery(set_as_current=False)
    every = AlignedInterval(10, app=app)
    now = datetime.now(timezone.utc)
    boundary = math.floor(now.timestamp() / 10) * 10
    last = datetime.fromtimestamp(boundary + 0.001, timezone.utc)  # it fired at the current boundary
    due, wait = every.is_due(last)
    assert not due and abs(now.timestamp() + wait - (boundary + 10)) < 0.5  # next: the next boundary
    old = datetime.fromtimestamp(boundary - 25, timezone.utc)  # a beat that was down: due once, at once
    due, wait = every.is_due(old)
    assert due and 0 < wait <= 10
    assert isinstance(pickle.loads(pickle.dumps(every)), AlignedInterval)  # PersistentScheduler's shelve


def test_a_cron_schedule_keeps_its_time_zone() -> None:
    app = Celery(set_as_current=False, timezone="UTC")
    cron = Schedule(cron="0 9 * * *", timezone="Asia/Tokyo").celery_schedule(app)
    assert isinstance(cron, ZonedCrontab) and str(cron.tz) == "Asia/Tokyo"
    last = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)  # 09:30 in Tokyo: the next run is tomorrow 09:00
    cron.nowfun = lambda: datetime(2026, 1, 1, 0, 31, tzinfo=timezone.utc)
    assert cron.remaining_estimate(last).total_seconds() == pytest.approx(24 * 3600 - 31 * 60, abs=1)
    again = pickle.loads(pickle.dumps(cron))
    assert str(again.tz) == "Asia/Tokyo" and again._orig_hour == "9"


def test_the_program_schedules_join_the_app_beat_schedule_never_replacing_it() -> None:
    app = Celery(set_as_current=False)
    own = {"task": "proj.cleanup", "schedule": 60.0}
    app.conf.beat_schedule = {"cleanup": own, "n3:tick": {"task": "proj.mine", "schedule": 5.0}}
    spec = program({"interval_seconds": 30})
    assert merge_program_schedules(app, spec) == 1
    assert app.conf.beat_schedule["cleanup"] == own
    assert app.conf.beat_schedule["n3:tick"]["task"] == "proj.mine"  # a name the app uses stays the app's
    assert merge_program_schedules(app, None) == 0
    (entry,) = program_entries(spec).values()
    assert entry["task"] == SCHEDULE_TASK and entry["args"] == ("tick", "b", {"interval_seconds": 30.0}, {})
    assert isinstance(entry["schedule"], AlignedInterval)


def test_beat_stamps_the_moment_it_sends_a_schedule() -> None:
    headers: dict[str, Any] = {}
    stamp_fired_at(sender=SCHEDULE_TASK, headers=headers)
    assert isinstance(headers[FIRED_AT], float)
    first = headers[FIRED_AT]
    stamp_fired_at(sender=SCHEDULE_TASK, headers=headers)
    assert headers[FIRED_AT] == first  # a stamped message keeps its moment
    other: dict[str, Any] = {}
    stamp_fired_at(sender="proj.cleanup", headers=other)
    assert other == {}


class Dispatched:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any], str | None]] = []
        self.events: list[Event] = []

    def dispatch(self, spec: Any, context: dict[str, Any], workflow: str | None = None) -> Any:
        self.calls.append((spec, context, workflow))
        return type("Handle", (), {"id": f"run-{len(self.calls)}"})()


def test_two_firings_of_one_slot_start_one_run() -> None:
    spec = program({"interval_seconds": 2}, trigger_target="w", context_mapping={"slot": "data.slot"})
    seen = Dispatched()
    firing = Firing(MemoryStore, lambda: spec, seen.dispatch, seen.events.append)
    store = MemoryStore()
    firing.store = lambda: store
    config = {"interval_seconds": 2}
    assert firing.fire("tick", "w", config, {"k": 1}, 1000.003) == "run-1"
    assert firing.fire("tick", "w", config, {"k": 1}, 1000.4) == "duplicate"  # the other beat, same slot
    assert firing.fire("tick", "w", config, {"k": 1}, 1002.01) == "run-2"
    assert firing.counts == {"fired": 2, "duplicate": 1}
    (_, context, workflow), _ = seen.calls
    assert workflow == "w" and context["k"] == 1 and context["slot"] == 500  # context_mapping of the event
    assert context["trigger_event"]["event_type"] == "schedule"
    assert [e.data["slot"] for e in seen.events] == [500, 501]
    assert seen.events[0].data["scheduled_for"] == "1970-01-01T00:16:40+00:00"


def test_a_firing_for_a_target_the_program_lacks_fails() -> None:
    seen = Dispatched()
    firing = Firing(MemoryStore, lambda: program({"interval_seconds": 2}), seen.dispatch, seen.events.append)
    store = MemoryStore()
    firing.store = lambda: store
    with pytest.raises(UnknownTarget):
        firing.fire("added", "gone", {"interval_seconds": 2}, {}, 1000.0)
    assert not seen.calls


def test_a_beat_entry_refuses_a_bad_schedule() -> None:
    with pytest.raises(SpecError) as info:
        beat_entry("x", "b", {"cron": "* * *"})
    assert info.value.path == "source_config.cron"


def test_namel3ss_celery_beat_refuses_a_bad_program_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "parallel_blocks: [{name: b, steps: [{target: x}]}]\n"
        "event_triggers: [{name: t, event_type: schedule, trigger_target: b, source_config: {cron: '* * 99 * *'}}]\n"
    )
    assert main(["beat", "--program", str(bad), "--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "event_triggers[0].source_config.cron: its day_of_month field '99'" in capsys.readouterr().err


def test_a_beat_process_stamps_schedule_messages_as_it_publishes(n3: Any) -> None:
    from celery import signals

    signals.beat_init.send(sender=None)  # what beat sends before its first tick
    headers: dict[str, Any] = {}
    signals.before_task_publish.send(sender=SCHEDULE_TASK, body=((), {}, {}), headers=headers)
    assert isinstance(headers.get(FIRED_AT), float)


def test_two_beats_whose_clocks_differ_fire_each_slot_once() -> None:
    """Each beat names the slot by the clock that decided it was due: beat A, 20 s ahead of B, fires the
    boundary 1000 at B's 980 and names slot 500, as B does at its 1000; B's message finds A's claim."""
    spec = program({"interval_seconds": 2})
    seen = Dispatched()
    store = MemoryStore()
    firing = Firing(lambda: store, lambda: spec, seen.dispatch, seen.events.append)
    config = {"interval_seconds": 2}
    fired = []
    for boundary in (1000.0, 1002.0, 1004.0):
        fired.append(firing.fire("tick", "b", config, {}, boundary + 0.01))  # beat A, by its clock
        fired.append(firing.fire("tick", "b", config, {}, boundary + 0.2))  # beat B, 20 s later, by its own
    assert fired == ["run-1", "duplicate", "run-2", "duplicate", "run-3", "duplicate"]


class Beat:
    """What ``beat_init`` sends: Celery's beat service, with its app."""

    def __init__(self, store_now: Any) -> None:
        events = type("Events", (), {"store": lambda self: type("Store", (), {"now": lambda s: store_now()})()})()
        self.app = type("App", (), {"namel3ss": type("N3", (), {"events": events})()})()


def test_a_beat_whose_clock_is_off_the_stores_says_so_when_it_starts(caplog: pytest.LogCaptureFixture) -> None:
    import time

    from namel3ss_celery.events.beat import MAX_CLOCK_SKEW, check_clock

    with caplog.at_level("WARNING", logger="namel3ss_celery"):
        assert abs(check_clock(Beat(time.time)) or 0.0) < MAX_CLOCK_SKEW
        assert not caplog.records
        skew = check_clock(Beat(lambda: time.time() - 90))
    assert skew is not None and 89 < skew < 91
    (record,) = caplog.records
    assert "clock is +90.0s off the coordination store's (Redis TIME)" in record.getMessage()
    assert check_clock(None) is None  # no beat service with an app: nothing to compare


def test_the_event_store_tells_its_clock() -> None:
    import time

    from namel3ss_celery.events.stream import MemoryEventStore

    assert abs(MemoryEventStore().now() - time.time()) < 1
