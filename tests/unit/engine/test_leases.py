"""A launch or a settle whose process died half way is finished by whoever takes its lease over (``leases``):
the conductor on the memory store, with a publisher that records what it sends, and a process death
played by an exception that nothing catches."""

from __future__ import annotations

import time
from typing import Any

import pytest

from namel3ss_celery.engine.conductor import Conductor
from namel3ss_celery.engine.leases import LAUNCH_LEASE, SETTLE_LEASE, launch_lease
from namel3ss_celery.engine.ports import Launching
from namel3ss_celery.plan import fields
from namel3ss_celery.plan.model import Plan, PlanNode
from namel3ss_celery.registry import Registry
from namel3ss_celery.results import RunStatus, TaskStatus, WorkflowResult
from namel3ss_celery.worker.store import MemoryStore

from .test_conductor import TTL, Prepared, Recorder, block, report, result_of, start


class Died(BaseException):
    """The process doing the work stopped here (nothing below it runs; no ``except Exception`` catches it)."""


class DyingRecorder(Recorder):
    """Sends ``survive`` messages of the next node it publishes, then dies; after that, it sends normally."""

    def __init__(self, survive: int) -> None:
        super().__init__()
        self.survive: int | None = survive

    def send_node(self, run_id: str, plan: Plan, node: PlanNode, prepared: Prepared, launching: Launching) -> None:
        if self.survive is None:
            super().send_node(run_id, plan, node, prepared, launching)
            return
        survive, self.survive = self.survive, None
        self.sent.extend(prepared.first[launching.start : launching.start + survive])
        if survive:
            launching.sent(launching.start + survive)  # the broker surely has these
        raise Died


def leases_of(conductor: Conductor, run_id: str, now: float) -> list[str]:
    return [node for run, node in conductor.store.expired_leases(now, 1000) if run == run_id]


def later(seconds: float) -> float:
    return time.time() + seconds + 1


def test_a_run_whose_dispatching_process_died_before_publishing_is_launched_by_the_watchdog() -> None:
    conductor, recorder, run_id = start(block("collect", 3))  # a run, launched: its record is the template
    record = conductor.store.run_record(run_id) or {}
    store = conductor.store
    orphan = "run-2"  # recorded with its root claimed, as dispatch does, and then nothing
    fresh = {k: v for k, v in record.items() if not k.startswith("node:")}
    store.create_run(orphan, {**fresh, fields.launched("b"): "1"}, TTL, leases=[launch_lease("b")])
    assert conductor.enforce_leases() == 0  # its lease runs for a while: the dispatcher may be at work
    sent_before = len(recorder.sent)
    assert conductor.enforce_leases(now=later(LAUNCH_LEASE)) == 1
    resent = [m for m in recorder.sent[sent_before:] if m.run == orphan]
    assert [m.index for m in resent] == [0, 1, 2]
    assert leases_of(conductor, orphan, later(3600)) == []  # done: nobody holds it any more
    for message in resent:
        report(conductor, message, TaskStatus.COMPLETED, message.index)
    result = result_of(conductor, orphan)
    assert result is not None and result.overall_status == RunStatus.COMPLETED


def test_a_launch_that_died_half_way_sends_only_what_the_broker_did_not_have() -> None:
    store, recorder = MemoryStore(), DyingRecorder(survive=2)
    conductor = Conductor(lambda: store, recorder, Registry(), TTL)
    spec = block("collect", 5)
    with pytest.raises(Died):
        start_with(conductor, spec)
    assert [m.index for m in recorder.sent] == [0, 1]
    assert leases_of(conductor, "run-1", time.time()) == []  # held until it runs out
    assert conductor.enforce_leases(now=later(LAUNCH_LEASE)) == 1
    assert [m.index for m in recorder.sent] == [0, 1, 2, 3, 4]  # each step once
    for message in recorder.sent:
        report(conductor, message, TaskStatus.COMPLETED, message.index)
    result = result_of(conductor, "run-1")
    assert result is not None and result.overall_status == RunStatus.COMPLETED
    assert {k: v["result"] for k, v in result.final_result.items()} == {f"s{i}": i for i in range(5)}


def test_a_settle_that_died_while_launching_the_next_node_is_finished() -> None:
    store, recorder = MemoryStore(), DyingRecorder(survive=0)
    conductor = Conductor(lambda: store, recorder, Registry(), TTL)
    recorder.survive = None  # the first node publishes normally
    spec = {"parallel_blocks": [block("all", 2), {**block("all", 2), "name": "after", "depends_on": ["b"]}]}
    start_with(conductor, spec)
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    recorder.survive = 1  # the settle of b publishes one step of "after", then its process dies
    with pytest.raises(Died):
        report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    assert [(m.node, m.index) for m in recorder.sent] == [("b", 0), ("b", 1), ("after", 0)]
    assert result_of(conductor, "run-1") is None
    assert conductor.enforce_leases(now=later(LAUNCH_LEASE)) == 1
    assert [(m.node, m.index) for m in recorder.sent][3:] == [("after", 1)]
    for message in recorder.sent[2:]:
        report(conductor, message, TaskStatus.COMPLETED, message.index)
    result = result_of(conductor, "run-1")
    assert isinstance(result, WorkflowResult) and result.overall_status == RunStatus.COMPLETED


def test_a_settle_that_died_before_filing_its_result_is_settled_again() -> None:
    spec = {"parallel_blocks": [block("all", 1), {**block("all", 1), "name": "after", "depends_on": ["b"]}]}
    conductor, recorder, run_id = start(spec)
    advance = conductor.move_on

    def dies(*args: Any) -> None:
        raise Died

    conductor.move_on = dies  # type: ignore[method-assign]
    with pytest.raises(Died):
        report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    conductor.move_on = advance  # type: ignore[method-assign]
    assert conductor.store.get_fields(run_id, [fields.settled("b"), fields.node_result("b")]) == ["1", None]
    assert conductor.enforce_leases(now=later(LAUNCH_LEASE)) == 0  # a settle's lease is longer
    assert conductor.enforce_leases(now=later(SETTLE_LEASE)) == 1
    assert [m.node for m in recorder.sent] == ["b", "after"]
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED


def test_a_lease_of_a_run_that_is_gone_or_ended_is_dropped() -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    store = conductor.store
    store.claim(run_id, "node:late:launched", lease=launch_lease("late"))  # as if left by a settle that died
    assert conductor.enforce_leases(now=later(LAUNCH_LEASE)) == 1
    assert leases_of(conductor, run_id, later(3600)) == []
    assert len(recorder.sent) == 1  # the run had ended: nothing more is sent


def start_with(conductor: Conductor, spec: dict[str, Any]) -> str:
    """Record run ``run-1`` of ``spec`` and launch it with ``conductor`` (as ``start`` does, on its store)."""
    from .test_conductor import record_of

    conductor.store.create_run("run-1", record_of(spec), TTL)
    conductor.launch_roots("run-1")
    return "run-1"


class DiesAnnouncing:
    """A ``run_ended`` listener whose process dies the first time it is told (later ones it records)."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []
        self.died = False

    def __call__(self, run_id: str, plan: Plan, final: Any) -> None:
        if not self.died:
            self.died = True
            raise Died
        self.told.append((run_id, str(getattr(final, "overall_status", None))))


def test_a_run_whose_ender_died_before_announcing_it_is_announced_by_the_watchdog() -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    listener = DiesAnnouncing()
    conductor.run_ended.append(listener)
    with pytest.raises(Died):
        report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert (conductor.store.run_record(run_id) or {}).get(fields.DONE) == "1"  # ended, not announced
    assert listener.told == []
    assert conductor.enforce_leases(now=later(SETTLE_LEASE)) == 1
    assert listener.told == [(run_id, "completed")]
    assert conductor.enforce_leases(now=later(3600)) == 0  # announced: its lease is gone


def test_a_lease_held_is_renewed_until_let_go_and_a_store_error_does_not_stop_the_renewals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from namel3ss_celery.engine import leases
    from namel3ss_celery.errors import StoreUnavailable
    from tests.waiting import wait_until

    monkeypatch.setattr(leases, "RENEW_EVERY", 0.01)
    store = MemoryStore()
    store.create_run("r", {fields.PLAN: "{}"}, TTL, leases=[leases.Lease("b", time.time() + 1)])
    refusals = {"left": 2}
    renew = store.renew_lease

    def flaky_renew(run_id: str, node: str, until: float) -> None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise StoreUnavailable("down", store="memory://")
        renew(run_id, node, until)

    monkeypatch.setattr(store, "renew_lease", flaky_renew)
    keeper = leases.LeaseKeeper(lambda: store)
    with keeper.holding("r", "b", 30):
        wait_until(lambda: store.expired_leases(time.time() + 20, 10) == [], 10, "the lease was not renewed")
        assert keeper.held() == [("r", "b")]
    assert keeper.held() == []
    until = time.time() + 31
    keeper.renew_now()  # a renewal round after let_go renews nothing
    assert store.expired_leases(until, 10) == [("r", "b")]


def test_a_settle_slower_than_its_lease_is_not_taken_for_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    from namel3ss_celery.engine import conductor as conductor_module
    from namel3ss_celery.engine import leases

    monkeypatch.setattr(leases, "RENEW_EVERY", 0.01)
    monkeypatch.setattr(leases, "SETTLE_LEASE", 0.2)
    monkeypatch.setattr(conductor_module, "SETTLE_LEASE", 0.2)
    conductor, recorder, run_id = start(block("collect", 1))
    taken: list[int] = []
    settle = conductor.settle_claimed

    def slow_settle(*args: Any) -> None:  # a reducer that runs five leases long, watched all along
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            taken.append(conductor.enforce_leases(now=time.time()))
            time.sleep(0.02)
        settle(*args)

    monkeypatch.setattr(conductor, "settle_claimed", slow_settle)
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert taken and sum(taken) == 0
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED
