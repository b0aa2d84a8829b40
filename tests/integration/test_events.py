"""Events and triggers on a real worker and Redis: ``n3.emit`` from this process, matching on the worker
(``NAMEL3SS_CELERY_PROGRAM``; or in the emitting process with ``match_events: emitter``), filters,
deduplication across processes, rate limits, delay, loops, and the adapter's own ``workflow_completed`` starting a follow-up, exactly once per run.

The worker runs one task at a time (``solo``), so the match tasks of events emitted in order are matched in
that order; each test emits a last, distinct event and waits for its run, after which the earlier ones are
surely matched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.events.model import Event
from tests.waiting import wait_until

from .app import make_app
from .conftest import STEP_MODULES
from .workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60

PROGRAM = """
parallel_blocks:
  - {name: welcome, steps: [{target: context_value, key: who}]}
  - {name: order, steps: [{target: echo, value: ok}]}
  - {name: limited, steps: [{target: echo, value: ok}]}
  - {name: later, steps: [{target: echo, value: ok}]}
  - {name: looping, steps: [{target: emit_again, kind: loop-TAG}]}
  - {name: first, steps: [{target: echo, value: 1}]}
  - {name: second, steps: [{target: echo, value: 2}]}
  - {name: marker, steps: [{target: echo, value: done}]}
  - {name: audited, steps: [{target: context_value, key: event_handler}]}
  - {name: slow, steps: [{target: sleep, seconds: 1}]}
event_handlers:
  - name: audit-TAG
    event_types: [dataset_change]
    transform_function: enrich_event
    routing_rules:
      - {when: "data.size > 100", route_to: audited}
    route_to: echo
  - name: broken-TAG
    event_types: [user_input]
    transform_function: explode
    route_to: echo
    retry_policy: {max_retries: 1, retry_delay: 0.2, backoff: fixed}
    dead_letter_queue: dlq-TAG
event_triggers:
  - name: signup-TAG
    event_type: custom
    trigger_target: welcome
    filter_expression: "data.kind == 'signup-TAG' and data.plan in ['pro', 'team']"
    context_mapping: {who: data.user}
  - name: order-TAG
    event_type: webhook
    trigger_target: order
    filter_fields: {kind: order-TAG}
    deduplicate_window: 60
    source_config: {dedupe_key: data.order_id}
  - {name: burst-TAG, event_type: message, trigger_target: limited, filter_fields: {kind: burst-TAG},
     max_triggers_per_minute: 2}
  - {name: later-TAG, event_type: manual, trigger_target: later, filter_fields: {kind: later-TAG}, trigger_delay: 2}
  - {name: loop-TAG, event_type: custom, trigger_target: looping, filter_fields: {kind: loop-TAG}}
  - name: after-first-TAG
    event_type: workflow_completed
    trigger_target: second
    filter_expression: "data.workflow_name == 'first' and data.status == 'completed'"
  - {name: marker-TAG, event_type: custom, trigger_target: marker, filter_fields: {kind: marker-TAG}}
  - {name: sync-TAG, event_type: custom, trigger_target: slow, filter_fields: {kind: sync-TAG}, execution_mode: sync,
     source_config: {sync_timeout_seconds: 30}}
"""


@dataclass
class Deployment:
    n3: Namel3ssCelery
    worker: WorkerProcess
    tag: str
    program: Path
    since: str  # the stream's newest id before the test

    def kind(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def events(self) -> list[Event]:
        return [event for _id, event in _read_all(self)]

    def wait_for(self, what: str, check: object) -> list[Event]:
        """Every event so far, once ``check(events)`` holds."""
        deadline = time.monotonic() + WAIT
        while True:
            found = self.events()
            if check(found):  # type: ignore[operator]
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {WAIT}s: {what}\n{[e.to_dict() for e in found][-20:]}\n{self.worker.log()}"
                )
            time.sleep(0.1)

    def started_by(self, events: list[Event], event_ids: set[str]) -> list[Event]:
        return [e for e in events if e.event_type == "workflow_started" and e.data.get("trigger_event_id") in event_ids]

    def completed_by(self, events: list[Event], event_ids: set[str]) -> list[Event]:
        return [
            e for e in events if e.event_type == "workflow_completed" and e.data.get("trigger_event_id") in event_ids
        ]

    def dispatch_first(self) -> Any:
        """Dispatch block ``first`` as a program's target, whose run's end the ``after-first`` trigger follows."""
        from namel3ss_celery.events.targets import target_program
        from namel3ss_celery.spec import load_program

        program = load_program(self.program)
        (trigger,) = [t for t in program.event_triggers if t.trigger_target == "second"]
        spec, _ = target_program(program, trigger.model_copy(update={"trigger_target": "first"}))
        return self.n3.dispatch(spec)

    def settle(self) -> list[Event]:
        """Emit a marker event and wait for its run: every event emitted before it has been matched."""
        marker = self.n3.emit("custom", {"kind": self.kind("marker")})
        return self.wait_for("the marker's run", lambda found: self.completed_by(found, {marker.event_id}))


def _read_all(deployment: Deployment) -> list[tuple[str, Event]]:
    store = deployment.n3.events._store()
    found, after = [], deployment.since
    while True:
        batch = store.read(after, count=500)
        if not batch:
            return found
        found.extend(batch)
        after = batch[-1][0]


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployed(redis_url, redis_url, tmp_path)


@pytest.fixture
def rabbitmq_deployment(amqp_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """The same, with RabbitMQ as the broker (the stream and the store stay on Redis)."""
    yield from deployed(amqp_url, redis_url, tmp_path)


def deployed(broker: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    import tests.integration.event_steps  # noqa: F401
    import tests.integration.steps  # noqa: F401

    tag = uuid.uuid4().hex[:8]
    program = tmp_path / "events.yaml"
    program.write_text(PROGRAM.replace("TAG", tag))
    queue = f"n3test-events-{tag}"
    modules = f"{STEP_MODULES},tests.integration.event_steps"
    env = {
        "N3_TEST_BROKER": broker,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "NAMEL3SS_CELERY_STEP_MODULES": modules,
        "NAMEL3SS_CELERY_PROGRAM": str(program),
    }
    app = make_app(broker, redis_url, queue)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=tuple(modules.split(","))))
    worker = WorkerProcess("tests.integration.app", env, tmp_path, pool="solo", concurrency=1, queues=[queue])
    try:
        worker.wait_ready(app)
        yield Deployment(n3, worker, tag, program, n3.events._store().newest())
    finally:
        worker.stop()
        n3.close()


def test_an_event_starts_its_trigger_target_with_the_mapped_context(deployment: Deployment) -> None:
    d = deployment
    wanted = d.n3.emit("custom", {"kind": d.kind("signup"), "plan": "pro", "user": "ada"}, correlation_id="c-1")
    ignored = d.n3.emit("custom", {"kind": d.kind("signup"), "plan": "free", "user": "bob"})
    events = d.settle()
    (started,) = d.started_by(events, {wanted.event_id})
    assert not d.started_by(events, {ignored.event_id})  # the expression filtered it out
    run = d.n3.run(started.data["instance_id"]).get(timeout=WAIT)
    assert run.overall_status == "completed"
    assert run.blocks["welcome"].final_result == {"step_0": "ada"}  # context_mapping: who <- data.user
    (completed,) = d.completed_by(events, {wanted.event_id})
    assert completed.correlation_id == "c-1" and completed.data["status"] == "completed"


@pytest.mark.parametrize("where", ["worker", "emitter", "emitter-without-steps"])
def test_duplicates_from_two_processes_start_one_run(deployment: Deployment, redis_url: str, where: str) -> None:
    """Matched on the worker (the emitting processes have no program, or have it but not the steps its
    triggers start), or where emitted (they have the program and its steps, as web processes with the
    workers' settings do, and ``match_events: emitter``): either way, one run."""
    d = deployment
    code = (
        "import json, sys\n"
        "from namel3ss_celery import Namel3ssCelery\n"
        "from tests.integration.app import make_app\n"
        "n3 = Namel3ssCelery(make_app(sys.argv[1], sys.argv[1], sys.argv[2]))\n"
        "event = n3.emit('webhook', {'kind': sys.argv[3], 'order_id': 42})\n"
        "print(json.dumps([event.event_id, n3.events.counts]))\n"
        "n3.close()\n"
    )
    queue = d.worker.process.args[d.worker.process.args.index("-Q") + 1]  # type: ignore[union-attr]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if where.startswith("emitter"):
        env["NAMEL3SS_CELERY_PROGRAM"] = str(d.program)
    if where == "emitter":
        env["NAMEL3SS_CELERY_STEP_MODULES"] = f"{STEP_MODULES},tests.integration.event_steps"
        env["NAMEL3SS_CELERY_MATCH_EVENTS"] = "emitter"
    emitters = [
        subprocess.Popen(
            [sys.executable, "-c", code, redis_url, queue, d.kind("order")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    printed = [json.loads(p.communicate(timeout=WAIT)[0]) for p in emitters]
    assert all(p.returncode == 0 for p in emitters)
    ids = {event_id for event_id, _counts in printed}
    assert len(ids) == 2
    matched_here = sorted((counts.get("dispatched", 0), counts.get("duplicate", 0)) for _id, counts in printed)
    assert matched_here == ([(0, 1), (1, 0)] if where == "emitter" else [(0, 0), (0, 0)])
    events = d.settle()
    assert len(d.started_by(events, ids)) == 1  # the same order id, within deduplicate_window: one run


def test_a_rate_limit_drops_the_excess_and_says_so(deployment: Deployment) -> None:
    d = deployment
    ids = {d.n3.emit("message", {"kind": d.kind("burst"), "n": n}).event_id for n in range(4)}
    events = d.settle()
    assert len(d.started_by(events, ids)) == 2  # max_triggers_per_minute: 2
    alerts = [e for e in events if e.event_type == "system_alert" and e.data.get("event_id") in ids]
    assert [a.data["reason"] for a in alerts] == ["rate_limited", "rate_limited"]
    assert all(a.data["trigger"] == d.kind("burst") for a in alerts)


def test_a_delayed_trigger_starts_its_run_after_the_delay(deployment: Deployment) -> None:
    d = deployment
    event = d.n3.emit("manual", {"kind": d.kind("later")})
    events = d.wait_for("the delayed run", lambda found: d.completed_by(found, {event.event_id}))
    (started,) = d.started_by(events, {event.event_id})
    assert started.timestamp - event.timestamp >= 2.0  # trigger_delay: 2


def test_a_delayed_trigger_delivered_twice_starts_one_run(deployment: Deployment) -> None:
    """Its countdown task delivered a second time (as Redis redelivers an unacknowledged message after the
    visibility timeout): one run."""
    d = deployment
    event = d.n3.events.event("manual", {"kind": d.kind("later")})
    for _ in range(2):
        d.n3.app.signature("n3.events.fire", args=(d.kind("later"), {"trigger_event": event.to_dict()})).apply_async()
    events = d.settle()
    assert len(d.started_by(events, {event.event_id})) == 1


def test_a_sync_trigger_makes_the_emitter_wait_and_hands_back_the_runs_result(deployment: Deployment) -> None:
    """execution_mode sync: emitted where the program is unknown, the worker that matches the event starts
    nothing and says why. Emitted from a process that has the program, emit returns once the run has ended,
    with its result: matched on the worker (the default: this process does not even need the steps), or
    where emitted (``match_events: emitter``)."""
    d = deployment
    elsewhere = d.n3.emit("custom", {"kind": d.kind("sync")})
    events = d.settle()
    (alert,) = [e for e in events if e.event_type == "system_alert" and e.data.get("event_id") == elsewhere.event_id]
    assert alert.data["reason"] == "sync_not_waited" and not d.started_by(events, {elsewhere.event_id})
    d.n3.events.use_program(d.program)
    for match_here in (False, True):
        d.n3.events.match_here = match_here
        began, dispatched = time.monotonic(), d.n3.events.counts.get("dispatched", 0)
        here = d.n3.emit("custom", {"kind": d.kind("sync")})
        assert time.monotonic() - began >= 1.0  # its step sleeps a second
        assert d.n3.events.counts.get("dispatched", 0) - dispatched == (1 if match_here else 0)  # where it matched
        result = here.results[d.kind("sync")]
        assert result.overall_status == "completed" and result.blocks["slow"].final_result == {"step_0": 1.0}
        (started,) = d.started_by(d.events(), {here.event_id})
        assert started.data["instance_id"] == result.run_id


def test_a_workflow_that_triggers_itself_stops_at_the_depth_limit(deployment: Deployment) -> None:
    from namel3ss_celery.events.matching import MAX_DEPTH

    d = deployment
    d.n3.emit("custom", {"kind": d.kind("loop")})
    events = d.wait_for(
        "the loop to be stopped",
        lambda found: any(e.event_type == "system_alert" and e.data.get("reason") == "loop" for e in found),
    )
    looped = [e for e in events if e.event_type == "workflow_started" and e.data["workflow_name"] == "looping"]
    assert len(looped) == MAX_DEPTH


def test_a_run_ending_starts_a_follow_up_once(deployment: Deployment) -> None:
    d = deployment
    first = d.dispatch_first()
    assert first.get(timeout=WAIT).overall_status == "completed"
    events = d.wait_for(
        "the follow-up run",
        lambda found: any(e.event_type == "workflow_completed" and e.data["workflow_name"] == "second" for e in found),
    )
    ended = [e for e in events if e.event_type == "workflow_completed" and e.data["instance_id"] == first.id]
    assert len(ended) == 1  # exactly one workflow_completed per run
    (follow_up,) = [e for e in events if e.event_type == "workflow_started" and e.data["workflow_name"] == "second"]
    assert follow_up.data["trigger_event_id"] == ended[0].event_id


def test_a_handler_transforms_and_routes_by_its_rules(deployment: Deployment) -> None:
    d = deployment
    big = d.n3.emit("dataset_change", {"size": 500})
    small = d.n3.emit("dataset_change", {"size": 5})
    events = d.wait_for(
        "both handled runs", lambda found: len(d.completed_by(found, {big.event_id, small.event_id})) == 2
    )
    (by_rule,) = d.completed_by(events, {big.event_id})
    assert by_rule.data["workflow_name"] == "audited"  # the rule data.size > 100 matched
    assert d.n3.run(by_rule.data["instance_id"]).get(timeout=WAIT).final_result == {"step_0": d.kind("audit")}
    (by_default,) = d.completed_by(events, {small.event_id})
    result = d.n3.run(by_default.data["instance_id"]).get(timeout=WAIT)
    assert result.final_result == {"step_0": "dataset_change:5"}  # route_to: a step target, its step the data


def test_a_handler_that_keeps_failing_ends_in_its_dead_letter_queue(deployment: Deployment, redis_url: str) -> None:
    d = deployment
    event = d.n3.emit("user_input", {"text": "hello"})
    d.wait_for(
        "the handler's failure",
        lambda found: any(
            e.data.get("reason") == "handler_failed" and e.data.get("event_id") == event.event_id for e in found
        ),
    )
    queue = d.kind("dlq")
    listed = cli(redis_url, "dlq", "list", "--program", str(d.program), "--json")  # the handler's queue, found
    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)[queue]
    assert letter["task"] == "n3.events.handle" and letter["node"] == f"handler {d.kind('broken')}"
    assert f"cannot handle {event.event_id}" in letter["error"] and letter["requeues"] == 0
    requeued = cli(redis_url, "dlq", "requeue", "--program", str(d.program), "--json")
    assert requeued.returncode == 0, requeued.stderr
    (again,) = json.loads(requeued.stdout)[queue]
    assert again["task_id"]  # handled again; it fails again, and is back in its dead-letter queue, counted

    def back() -> bool:
        letters = json.loads(cli(redis_url, "dlq", "list", "--queue", queue, "--json").stdout)[queue]
        return [letter["requeues"] for letter in letters] == [1]

    wait_until(back, WAIT, "the requeued handler back in its dead-letter queue")


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "namel3ss_celery.cli", *args, "--broker", redis_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_step_events_when_asked(redis_url: str, tmp_path: Path) -> None:
    """NAMEL3SS_CELERY_STEP_EVENTS=1: each step a worker runs is a task_completed or task_failed event."""
    import tests.integration.steps  # noqa: F401

    queue = f"n3test-stepevents-{uuid.uuid4().hex[:8]}"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
        "NAMEL3SS_CELERY_STEP_EVENTS": "1",
    }
    app = make_app(redis_url, redis_url, queue)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,)))
    worker = WorkerProcess("tests.integration.app", env, tmp_path, queues=[queue])
    try:
        worker.wait_ready(app)
        since = n3.events.store().newest()
        run = n3.dispatch(
            {
                "name": "b",
                "strategy": "collect",
                "retry_failed": True,
                "max_retries": 1,
                "steps": [{"name": "good", "target": "echo", "value": 1}, {"name": "bad", "target": "fail"}],
            }
        )
        assert run.get(timeout=WAIT).overall_status == "completed"
        ours: dict[str, Event] = {}

        def both() -> bool:
            for _i, event in n3.events.store().read(since, count=1000):
                if event.data.get("instance_id") == run.id and event.event_type in ("task_completed", "task_failed"):
                    ours[event.data["step"]] = event
            return len(ours) == 2

        wait_until(both, WAIT, lambda: f"step events: {ours}")
        assert ours["good"].event_type == "task_completed" and ours["good"].data["target"] == "echo"
        assert ours["bad"].event_type == "task_failed" and "step failed on purpose" in ours["bad"].data["error"]
        assert (ours["good"].data["attempts"], ours["bad"].data["attempts"]) == (1, 2)  # bad was retried once
    finally:
        worker.stop()
        n3.close()


def test_each_node_of_a_workflow_is_announced_as_it_starts_and_ends_in_order(deployment: Deployment) -> None:
    d = deployment
    spec = {
        "name": f"two-{d.tag}",
        "steps": [
            {"name": "a", "target": "echo", "value": 1},
            {"name": "b", "target": "fail", "message": "no", "depends_on": ["a"]},
        ],
    }
    run = d.n3.dispatch(spec)
    assert run.get(timeout=WAIT).overall_status == "failed"
    events = d.wait_for(
        "the run's end", lambda found: any(e.data.get("instance_id") == run.id and "blocks" in e.data for e in found)
    )
    mine = [
        (str(e.event_type), e.data.get("node"), e.data.get("status"))
        for e in events
        if e.data.get("instance_id") == run.id
    ]
    assert mine == [
        ("workflow_started", None, None),
        ("block_started", "a", None),
        ("block_completed", "a", "completed"),
        ("block_started", "b", None),
        ("block_completed", "b", "failed"),
        ("workflow_completed", None, "failed"),
    ]
    (failed,) = [e for e in events if e.event_type == "block_completed" and e.data["node"] == "b"]
    assert "no" in failed.data["error"] and failed.data["failed_tasks"] == 1 and failed.data["strategy"] == "all"


def test_on_rabbitmq_an_emitted_event_and_a_runs_end_each_start_their_trigger(rabbitmq_deployment: Deployment) -> None:
    """RabbitMQ as the broker: an event emitted here starts its trigger's run on the worker, and that run's end
    (announced by the worker) starts the follow-up trigger's."""
    d = rabbitmq_deployment
    emitted = d.n3.emit("custom", {"kind": d.kind("signup"), "plan": "pro", "user": "ada"})
    first = d.dispatch_first()
    assert first.get(timeout=WAIT).overall_status == "completed"
    events = d.wait_for(
        "both runs",
        lambda found: (
            d.completed_by(found, {emitted.event_id})
            and any(e.event_type == "workflow_completed" and e.data["workflow_name"] == "second" for e in found)
        ),
    )
    (welcomed,) = d.completed_by(events, {emitted.event_id})
    assert welcomed.data["status"] == "completed" and welcomed.data["workflow_name"] == "welcome"
    run = d.n3.run(welcomed.data["instance_id"]).get(timeout=WAIT)
    assert run.blocks["welcome"].final_result == {"step_0": "ada"}
