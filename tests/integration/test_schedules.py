"""Schedules on a real worker, real beat processes and Redis: an interval schedule fires once per slot over
a window; two beats started at different moments fire it once per slot; a schedule added, changed and
removed at runtime (RedBeat) takes effect without restarting beat.

Each firing that wins its slot puts a ``schedule`` event in the deployment's stream (``data.slot``) and
starts one run (``workflow_started`` naming that event); a firing that loses says so in the worker's log.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.events.model import Event
from tests.waiting import poll, wait_until

from .beat_app import make_beat_app
from .conftest import STEP_MODULES
from .workers import CLI, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60

PROGRAM = """
parallel_blocks:
  - {name: ticked, steps: [{target: echo, value: tick}]}
event_triggers:
  - {name: tick-TAG, event_type: schedule, trigger_target: ticked, source_config: {interval_seconds: EVERY}}
"""

KOLKATA = "Asia/Kolkata"
CRON_PROGRAM = """
parallel_blocks:
  - {name: ticked, steps: [{target: echo, value: tick}]}
event_triggers:
  - {name: minutely-TAG, event_type: schedule, trigger_target: ticked,
     source_config: {cron: "* HOURS * * *", timezone: Asia/Kolkata}}
"""


@dataclass
class Deployment:
    n3: Namel3ssCelery
    worker: WorkerProcess
    tag: str
    program: Path
    env: dict[str, str]
    log_dir: Path
    since: str
    beats: list[WorkerProcess] = field(default_factory=list)  # started with the deployment
    cron_hours: tuple[int, ...] = ()  # the hours of its cron schedule, if any

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

    def runs_of(self, fired: list[Event]) -> list[Event]:
        ids = {e.event_id for e in fired}
        return [e for e in self.events() if e.event_type == "workflow_started" and e.data["trigger_event_id"] in ids]

    def beat(self, name: str, *extra: str) -> WorkerProcess:
        command = [CLI, "beat", "-A", "tests.integration.beat_app", "--program", str(self.program), *extra]
        command += ["--schedule", str(self.log_dir / f"{name}-schedule"), "-l", "INFO", "--max-interval", "1"]
        return WorkerProcess("tests.integration.beat_app", self.env, self.log_dir, command=command, name=name)

    def duplicates(self) -> int:
        return len(re.findall(r"schedule \S+: slot \d+ already fired", self.worker.log_path.read_text()))


def sends(beat: WorkerProcess, entry: str) -> int:
    """How many messages ``beat`` has sent for beat entry ``entry`` (its log says each)."""
    if not beat._log.closed:
        beat._log.flush()
    return beat.log_path.read_text().count(f"Sending due task {entry} ")


def stop(*beats: WorkerProcess) -> None:
    for beat in beats:
        beat.stop()


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    yield from deployed(redis_url, redis_url, tmp_path, PROGRAM, every=getattr(request, "param", 1))


@pytest.fixture
def rabbitmq_deployment(amqp_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """The same, with RabbitMQ as the broker (the slots' claims, the stream and the results on Redis)."""
    yield from deployed(amqp_url, redis_url, tmp_path, PROGRAM, every=1)


@pytest.fixture(scope="module", autouse=True)
def cron_deployment(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A cron schedule on a beat started as this module starts: every minute of this hour and the next in
    Asia/Kolkata (UTC+5:30), hours that read in UTC would never come in that time. Its first firing, up to a
    minute away, comes while the other tests run; the last test checks it."""
    hour = datetime.now(ZoneInfo(KOLKATA)).hour
    hours = (hour, (hour + 1) % 24)
    made = deployed(
        redis_url, redis_url, tmp_path_factory.mktemp("cron"), CRON_PROGRAM.replace("HOURS", f"{hours[0]},{hours[1]}")
    )
    d = next(made)
    try:
        beat = d.beat("beat-cron")
        try:
            yield replace(d, beats=[beat], cron_hours=hours)
        finally:
            stop(beat)
    finally:
        made.close()


def deployed(broker: str, backend: str, tmp_path: Path, text: str, every: int = 1) -> Iterator[Deployment]:
    import tests.integration.steps  # noqa: F401

    tag = uuid.uuid4().hex[:8]
    program = tmp_path / "schedules.yaml"
    program.write_text(text.replace("TAG", tag).replace("EVERY", str(every)))
    queue = f"n3test-beat-{tag}"
    env = {
        "N3_TEST_BROKER": broker,
        "N3_TEST_BACKEND": backend,
        "N3_TEST_QUEUE": queue,
        "N3_TEST_REDBEAT_PREFIX": f"n3test-redbeat-{tag}:",
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
        "NAMEL3SS_CELERY_PROGRAM": str(program),
    }
    app = make_beat_app(broker, backend, queue, env["N3_TEST_REDBEAT_PREFIX"])
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,), program=None))
    n3.events.use_program(program)
    worker = WorkerProcess("tests.integration.beat_app", env, tmp_path, pool="solo", concurrency=1, queues=[queue])
    try:
        worker.wait_ready(app)
        yield Deployment(n3, worker, tag, program, env, tmp_path, n3.events._store().newest())
    finally:
        worker.stop()
        n3.close()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_an_interval_schedule_fires_once_per_slot_over_a_window(broker: str, request: pytest.FixtureRequest) -> None:
    d: Deployment = request.getfixturevalue("deployment" if broker == "redis" else "rabbitmq_deployment")
    name, window = f"tick-{d.tag}", 8  # interval_seconds: 1
    beat = d.beat("beat-a")
    try:
        wait_until(lambda: len(d.fired(name)) >= 1, WAIT, lambda: f"no firing\n{beat.log()}\n{d.worker.log()}")
        first = min(e.data["slot"] for e in d.fired(name))
        wait_until(
            lambda: any(e.data["slot"] >= first + window for e in d.fired(name)),
            WAIT,
            lambda: f"the window did not pass\n{beat.log()}\n{d.worker.log()}",
        )
    finally:
        stop(beat)
    slots = [e.data["slot"] for e in d.fired(name)]
    assert len(slots) == len(set(slots))  # one firing per slot
    in_window = [s for s in slots if first <= s < first + window]
    assert window - 1 <= len(in_window) <= window, sorted(slots)
    starts = [e.data["scheduled_for"] for e in d.fired(name)]
    assert all(s.endswith(":00+00:00") or re.search(r":\d\d\+00:00$", s) for s in starts)  # whole seconds
    runs = d.runs_of(d.fired(name))
    assert len(runs) == len(slots)  # each firing started its run: one run per slot
    (result,) = {d.n3.run(runs[0].data["instance_id"]).get(timeout=WAIT).overall_status}
    assert result == "completed"


def test_two_beats_started_at_different_moments_fire_each_slot_once(deployment: Deployment) -> None:
    d, name = deployment, f"tick-{deployment.tag}"
    entry = f"n3:{name}"
    first = d.beat("beat-a")
    second = None
    try:
        wait_until(lambda: sends(first, entry) >= 2, WAIT, lambda: f"beat a sent nothing\n{first.log()}")
        second = d.beat("beat-b")  # started later, with a schedule file of its own: a second beat by mistake
        wait_until(lambda: sends(second, entry) >= 5, WAIT, lambda: f"beat b sent too little\n{second.log()}")
    finally:
        stop(first, *([second] if second else []))
    assert second is not None
    sent = sends(first, entry) + sends(second, entry)
    # Beat logs "Sending due task" before it publishes: a beat stopped in between sent one message less.
    unsure = 2
    wait_until(  # every message sent has been handled: it started its slot's run, or found the slot taken
        lambda: len(d.fired(name)) + d.duplicates() >= sent - unsure,
        WAIT,
        lambda: f"{len(d.fired(name))} fired + {d.duplicates()} duplicates of {sent}\n{d.worker.log()}",
    )
    slots = [e.data["slot"] for e in d.fired(name)]
    assert len(slots) == len(set(slots)), sorted(slots)  # never twice for one slot
    assert d.duplicates() >= 4  # both beats did fire the slots they shared
    assert max(slots) - min(slots) + 1 - len(slots) <= 1  # and no slot was lost on the way (one at an edge)
    runs = d.runs_of(d.fired(name))
    assert sorted(r.data["trigger_event_id"] for r in runs) == sorted(e.event_id for e in d.fired(name))


def test_a_schedule_added_changed_and_removed_at_runtime_needs_no_restart(deployment: Deployment) -> None:
    d, name = deployment, f"added-{deployment.tag}"
    schedules = d.n3.schedules
    beat = d.beat("beat-redbeat", "--scheduler", "redbeat")
    try:
        wait_until(lambda: "beat: Starting" in beat.log(), WAIT, lambda: f"beat did not start\n{beat.log()}")
        added = schedules.add(name, "ticked", interval_seconds=1, context={"version": 1})
        assert added.config == {"interval_seconds": 1.0} and schedules.get(name) == added
        assert name in [s.name for s in schedules.list()]
        wait_until(lambda: len(d.fired(name)) >= 3, WAIT, lambda: f"the added schedule did not fire\n{beat.log()}")

        changed_at = time.time()
        schedules.add(name, "ticked", interval_seconds=2, context={"version": 2})  # the same name: a change
        wait_until(
            lambda: len([e for e in d.fired(name) if e.data["schedule"]["interval_seconds"] == 2.0]) >= 2,
            WAIT,
            lambda: f"the change did not take\n{beat.log()}\n{d.worker.log()}",
        )
        later = [e for e in d.fired(name) if e.data["schedule"]["interval_seconds"] == 2.0]
        assert all(e.data["fired_at"] >= changed_at for e in later)
        assert [e.data["slot"] * 2 % 2 for e in later] == [0] * len(later)
        assert all(_seconds(e) % 2 == 0 for e in later)  # at even epoch seconds: multiples of 2

        assert schedules.remove(name) is True
        removed_at = time.time()
        assert schedules.get(name) is None and schedules.remove(name) is False
        poll(lambda: False, 4.0)  # two slots of the changed schedule: long enough for a firing to show
        assert not [e for e in d.fired(name) if e.data["fired_at"] > removed_at + 0.5], d.fired(name)[-3:]
    finally:
        stop(beat)
    runs = d.runs_of(d.fired(name))
    contexts = [d.n3.run(r.data["instance_id"]).get(timeout=WAIT) for r in runs[-1:]]
    assert all(c.overall_status == "completed" for c in contexts)


def _seconds(event: Event) -> int:
    stamp: Any = event.data["scheduled_for"]
    return int(stamp[17:19])


def test_the_clock_a_beat_checks_its_own_against_is_redis_time(redis_url: str) -> None:
    """``check_clock`` compares beat's clock with the coordination store's: Redis's ``TIME``, which keeps every
    claim's and window's TTL."""
    import redis

    from namel3ss_celery.events.stream import RedisEventStore

    store = RedisEventStore(redis_url)
    try:
        seconds, microseconds = redis.Redis.from_url(redis_url).time()
        assert abs(store.now() - (seconds + microseconds / 1e6)) < 1.0
    finally:
        store.close()


def test_a_cron_schedule_fires_on_the_minute_in_its_time_zone(cron_deployment: Deployment) -> None:
    """Kept last: the beat started with the module has had the other tests' time to reach a minute."""
    d, name = cron_deployment, f"minutely-{cron_deployment.tag}"
    (beat,) = d.beats
    wait_until(lambda: d.fired(name), 75, lambda: f"no firing in 75 s\n{beat.log()}\n{d.worker.log()}")
    (fired, *_) = d.fired(name)
    assert fired.data["slot"] % 60 == 0  # the slot of a cron schedule: its minute, in epoch seconds
    moment = datetime.fromisoformat(fired.data["scheduled_for"])
    assert moment.timestamp() == fired.data["slot"] and moment.second == 0, fired.data
    hours = {int(h) for h in d.program.read_text().split('cron: "* ')[1].split(" ")[0].split(",")}
    assert moment.astimezone(ZoneInfo(KOLKATA)).hour in hours  # its hours are Kolkata's
    assert 0 <= fired.data["fired_at"] - fired.data["slot"] < 30  # by beat's tick, soon after the minute
    (run,) = d.runs_of([fired])
    assert d.n3.run(run.data["instance_id"]).get(timeout=WAIT).overall_status == "completed"
