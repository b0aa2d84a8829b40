"""Whose overdue work a watchdog does (engine.home), and how a run names its broker (apps.broker_identity)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from celery import Celery

from namel3ss_celery.apps import broker_identity
from namel3ss_celery.engine.conductor import Conductor
from namel3ss_celery.engine.enforce import enforce_deadlines, enforce_leases
from namel3ss_celery.engine.home import FOREIGN_GRACE, Home
from namel3ss_celery.engine.ports import Lease
from namel3ss_celery.plan import fields
from namel3ss_celery.registry import Registry
from namel3ss_celery.worker.store import MemoryStore

MINE, THEIRS = "redis://127.0.0.1:6379/0", "amqp://127.0.0.1:5672//"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def run_of(store: MemoryStore, broker: str | None) -> str:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {fields.STATUS: "running"} | ({fields.BROKER: broker} if broker else {}), 60)
    return run_id


def test_a_run_of_its_own_broker_or_naming_none_is_taken_at_once(store: MemoryStore) -> None:
    home = Home(lambda: store, lambda: MINE)
    store.beat("them@host", 60, THEIRS)
    assert home.takes(run_of(store, MINE), "b")
    assert home.takes(run_of(store, None), "b")  # dispatched by an earlier release
    assert Home(lambda: store, lambda: "").takes(run_of(store, THEIRS), "b")  # a process naming no broker


def test_another_brokers_run_is_taken_at_once_when_none_of_its_workers_lives(store: MemoryStore) -> None:
    home = Home(lambda: store, lambda: MINE)
    store.beat("me@host", 60, MINE)
    assert home.takes(run_of(store, THEIRS), "b")


def test_another_brokers_run_is_left_to_its_live_workers_for_the_grace(store: MemoryStore) -> None:
    clock = Clock()
    home = Home(lambda: store, lambda: MINE, clock=clock)
    store.beat("them@host", 600, THEIRS)
    run_id = run_of(store, THEIRS)
    assert not home.takes(run_id, "b")
    clock.now += FOREIGN_GRACE - 1
    assert not home.takes(run_id, "b")
    assert not home.takes(run_id, "other")  # each piece of work has its own grace, from when it was seen
    clock.now += 1
    assert home.takes(run_id, "b")  # then it is done here: nobody there did it
    assert not home.takes(run_id, "other")
    assert not home.takes(run_id, "b")  # seen again, as new (its own workers had it all that time)


def test_a_watchdog_leaves_another_brokers_lease_and_deadline_where_they_are(store: MemoryStore) -> None:
    home = Home(lambda: store, lambda: MINE)
    store.beat("them@host", 60, THEIRS)
    theirs, mine = run_of(store, THEIRS), run_of(store, MINE)
    resumed: list[str] = []
    decided: list[str] = []
    for run_id in (theirs, mine):
        assert store.claim(run_id, fields.launched("b"), lease=Lease("b", 1.0))  # ran out long ago
        store.add_deadline(run_id, "b", 1.0, 60)
    assert enforce_leases(store, lambda run_id, node: resumed.append(run_id), takes=home.takes) == 2
    assert enforce_deadlines(store, lambda run_id, node, decision: decided.append(run_id), takes=home.takes) == 2
    assert resumed == [mine] and decided == [mine]
    assert store.expired_leases(2.0, 10) == [(theirs, "b")]  # still there for its own workers
    assert store.due_deadlines(2.0, 10) == [(theirs, "b")]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("redis://localhost:6379/0", "redis://127.0.0.1"),  # the same host, default port and database
        ("redis://:secret@127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),  # credentials are not part of it
        ("amqp://guest:guest@localhost//", "pyamqp://other@127.0.0.1:5672//"),
    ],
)
def test_one_broker_named_two_ways_is_one_broker(one: str, other: str) -> None:
    assert broker_identity(Celery(broker=one, set_as_current=False)) == broker_identity(
        Celery(broker=other, set_as_current=False)
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/4"),
        ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6380/3"),
        ("amqp://127.0.0.1//", "amqp://127.0.0.1/h1"),
        ("redis://127.0.0.1:6379/0", "amqp://127.0.0.1//"),
    ],
)
def test_other_brokers_are_other_brokers(one: str, other: str) -> None:
    assert broker_identity(Celery(broker=one, set_as_current=False)) != broker_identity(
        Celery(broker=other, set_as_current=False)
    )


def test_a_brokers_identity_names_no_password() -> None:
    assert "secret" not in broker_identity(Celery(broker="amqp://user:secret@127.0.0.1//", set_as_current=False))


def test_a_watchdog_looks_past_another_brokers_leases_to_its_own(store: MemoryStore) -> None:
    home = Home(lambda: store, lambda: MINE)
    store.beat("them@host", 60, THEIRS)
    theirs = [run_of(store, THEIRS) for _ in range(45)]
    mine = run_of(store, MINE)
    for at, run_id in enumerate([*theirs, mine]):
        assert store.claim(run_id, fields.launched("b"), lease=Lease("b", 1.0 + at))  # theirs ran out first
    resumed: list[str] = []
    enforce_leases(store, lambda run_id, node: resumed.append(run_id), limit=20, takes=home.takes)
    assert resumed == [mine]


def test_the_conductor_asks_its_home_before_enforcing(store: MemoryStore) -> None:
    conductor = Conductor(lambda: store, None, Registry(), 60)
    assert conductor.home.takes(run_of(store, THEIRS), "b")  # no broker of its own: every run's work
    conductor.home = Home(lambda: store, lambda: MINE)
    store.beat("them@host", 60, THEIRS)
    run_id = run_of(store, THEIRS)
    assert store.claim(run_id, fields.launched("b"), lease=Lease("b", 1.0))
    store.add_deadline(run_id, "b", 1.0, 60)
    assert conductor.enforce_leases(now=2.0) == 1 and conductor.enforce_deadlines(now=2.0) == 1
    assert store.expired_leases(2.0, 10) == [(run_id, "b")]  # left, not taken
    assert store.due_deadlines(2.0, 10) == [(run_id, "b")]


def test_a_loopback_or_memory_broker_is_this_machine_s_own() -> None:
    """Two machines' ``localhost`` are two brokers; two processes' memory transports are too."""
    here = socket.gethostname()
    assert broker_identity(Celery(broker="amqp://localhost//", set_as_current=False)).startswith(f"amqp://{here}/")
    memory = broker_identity(Celery(broker="memory://", set_as_current=False))
    assert memory.startswith(f"memory://{here}.{os.getpid()}/")
