"""A step is held in its worker's name as its pool process takes it, before its message is acknowledged."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from namel3ss_celery.engine.conductor import Conductor
from namel3ss_celery.engine.control import BlockControl
from namel3ss_celery.engine.lost import held
from namel3ss_celery.errors import StoreUnavailable
from namel3ss_celery.plan.message import StepMessage
from namel3ss_celery.registry import Registry
from namel3ss_celery.worker import accepting
from namel3ss_celery.worker.accepting import AWAY_FOR, Taker, step_request_class
from namel3ss_celery.worker.store import MemoryStore
from namel3ss_celery.worker.watchdog import INCARNATION
from tests.unit.plan.test_message import payload

TTL = 60
WORKER = "w1@host"


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.create_run("r", {"status": "running"}, TTL)
    return store


def conductor_on(store: Any) -> Conductor:
    return Conductor(lambda: store, SimpleNamespace(), Registry(), TTL)


def test_a_taken_step_is_held_naming_the_process_that_took_it_as_its_start_guard_will(store: MemoryStore) -> None:
    assert Taker(conductor_on(store)).hold([payload()], WORKER, 4242, "t1:0") is True
    message = StepMessage.decode(payload())
    member = held(message, WORKER, TTL, 4242, INCARNATION)
    assert member is not None
    assert store.held_steps(WORKER) == [member.member]
    # The start guard in process 4242 holds the same member: once started and filed, nothing is left held.
    assert BlockControl(store, "r", "b").start(0, WORKER, "prefork", 4242, "t1", member, delivery="t1:0")
    store.file_step("r", "b", 0, "{}", TTL, "node:b:decided", held=member)
    assert store.held_steps(WORKER) == []


def test_a_step_redelivered_when_lost_or_not_ours_is_not_held(store: MemoryStore) -> None:
    taker = Taker(conductor_on(store))
    assert taker.hold([payload() | {"deliveries": 1}], WORKER, 1, "t:0") is False  # at_least_once
    assert taker.hold(["not a step message"], WORKER, 1, "t:0") is False
    assert taker.hold([], WORKER, 1, "t:0") is False
    sticky = payload() | {"sticky": {"pool": "p", "key": "k"}}  # may be sent on unstarted: held from its start
    assert taker.hold([sticky], WORKER, 1, "t:0") is False
    assert store.held_steps(WORKER) == []


def test_a_store_that_does_not_answer_leaves_the_steps_unheld_for_a_while_and_says_so(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[int] = []

    class Away(MemoryStore):
        def take_step(self, *args: Any) -> bool:
            asked.append(1)
            raise StoreUnavailable("redis://127.0.0.1:1", "down")

    now = [0.0]
    taker = Taker(conductor_on(Away()), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="namel3ss_celery"):
        assert taker.hold([payload()], WORKER, 1, "t:0") is False
        assert taker.hold([payload()], WORKER, 1, "t:0") is False  # not asked again: acknowledged at once
    assert len(asked) == 1
    assert "not held before their messages are acknowledged" in caplog.text
    now[0] = AWAY_FOR
    assert taker.hold([payload()], WORKER, 1, "t:0") is False
    assert len(asked) == 2  # asked again once that while has passed


def test_the_step_request_holds_before_celery_acknowledges(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celery("accepting", set_as_current=False)
    order: list[str] = []
    base: Any = accepting.symbol_by_name(app.Task.Request)
    monkeypatch.setattr(base, "on_accepted", lambda self, pid, at: order.append("acknowledged"))
    monkeypatch.setattr(accepting.Taker, "hold", lambda *args: order.append(f"held {args[-1]}") or True)
    request_class = step_request_class(app.Task, conductor_on(store))
    assert issubclass(request_class, base)

    class Probe(request_class):  # type: ignore[misc, valid-type]
        task = SimpleNamespace(acks_late=False)
        args = [payload()]
        hostname = WORKER
        id = "t1"
        request_dict = {"retries": 2}

    request = Probe.__new__(Probe)
    request.on_accepted(4242, 0.0)
    assert order == ["held t1:2", "acknowledged"]
    order.clear()
    Probe.task = SimpleNamespace(acks_late=True)  # acknowledged when it ends: the broker keeps it till then
    request.on_accepted(4242, 0.0)
    assert order == ["acknowledged"]
    order.clear()
    Probe.task = SimpleNamespace(acks_late=False)
    request.on_accepted(os.getpid(), 0.0)  # taken by this process (threads, solo): its start guard holds it
    assert order == ["acknowledged"]


def test_a_step_whose_deadline_passed_before_it_started_lets_go_of_its_hold(store: MemoryStore) -> None:
    message = StepMessage.decode(payload())
    member = held(message, WORKER, TTL, 4242, INCARNATION)
    assert member is not None and Taker(conductor_on(store)).hold([payload()], WORKER, 4242, "t1:0")
    assert BlockControl(store, "r", "b", deadline=1.0).start(0, WORKER, "prefork", 4242, "t1", member) is False
    assert store.held_steps(WORKER) == []


def test_a_hold_landing_after_its_delivery_started_and_sent_its_retry_on_is_refused(store: MemoryStore) -> None:
    """The pool process ran the step, which failed; it sent the retry on and let go of the step, all before its
    worker's main process heard that it had taken it."""
    message = StepMessage.decode(payload())
    member = held(message, WORKER, TTL, 4242, INCARNATION)
    assert member is not None
    assert BlockControl(store, "r", "b").start(0, WORKER, "prefork", 4242, "t1", member, delivery="t1:0")
    store.release(WORKER, member.member)  # the retry was published
    assert Taker(conductor_on(store)).hold([payload()], WORKER, 4242, "t1:0") is False
    assert store.held_steps(WORKER) == []
    assert Taker(conductor_on(store)).hold([payload()], WORKER, 4343, "t1:1") is True  # the retry, taken elsewhere
