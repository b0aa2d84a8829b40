"""The coordination store contract, kept by both stores: ``MemoryStore`` and ``RedisStore`` on the real Redis.

Every operation of the ``CoordinationStore`` Protocol, and what each write does to a run whose record is
gone (expired, or never created): nothing is written; a claim is not won, ``finish`` returns False, and
the other writes raise ``UnknownRun``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from namel3ss_celery.engine.ports import CoordinationStore, Held, Lease
from namel3ss_celery.errors import UnknownRun
from namel3ss_celery.plan.fields import STREAM_KEY
from namel3ss_celery.worker.redis_store import RedisStore
from namel3ss_celery.worker.store import MemoryStore

pytestmark = pytest.mark.integration

TTL = 60
EXPIRE_WITHIN = 10.0  # seconds a run created with ttl=1 may take to be gone


def new_id() -> str:
    return uuid.uuid4().hex


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {seconds}s")
        time.sleep(0.05)


class ExpiredRuns:
    """Runs created with a one-second ttl (with step envelopes and a list filed for a minute), expired
    together, handed out one per test: one wait for a whole batch, not one per test."""

    BATCH = 40

    def __init__(self, store: CoordinationStore) -> None:
        self.store = store
        self.ids: list[str] = []

    def take(self) -> str:
        if not self.ids:
            batch = [new_id() for _ in range(self.BATCH)]
            for run_id in batch:
                self.store.create_run(run_id, {"plan": "{}"}, 1)
                self.store.record_step(run_id, "b", 0, "e0", 1)  # a step filed with a longer ttl would renew its run
                self.store.push_items(run_id, "feed", ["x"], TTL)
            wait_for(lambda: all(self.store.run_record(r) is None for r in batch), EXPIRE_WITHIN, "runs not expired")
            self.ids = batch
        return self.ids.pop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[CoordinationStore]:
    """Each store in turn: in memory, and on the real Redis (the tests' database)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_store = RedisStore(request.getfixturevalue("redis_url"))
    yield redis_store
    redis_store.close()


@pytest.fixture(scope="module")
def expired_runs(store: CoordinationStore) -> ExpiredRuns:
    return ExpiredRuns(store)


@pytest.fixture(params=["never-created", "expired"])
def gone(request: pytest.FixtureRequest, expired_runs: ExpiredRuns) -> str:
    """The id of a run whose record is gone: one never created, or one that expired."""
    return new_id() if request.param == "never-created" else expired_runs.take()


@pytest.fixture
def run_id(store: CoordinationStore) -> str:
    """A live run, with a plan."""
    run_id = new_id()
    store.create_run(run_id, {"plan": "{}", "status": "running"}, TTL)
    return run_id


# --- records and fields --------------------------------------------------------------


def test_a_run_record_holds_its_fields_and_is_a_copy(store: CoordinationStore, run_id: str) -> None:
    record = store.run_record(run_id)
    assert record is not None and record == {"plan": "{}", "status": "running"}
    record["status"] = "changed"
    assert store.get_fields(run_id, ["status", "missing"]) == ["running", None]
    store.set_fields(run_id, {"status": "completed", "extra": "1"})
    assert store.run_record(run_id) == {"plan": "{}", "status": "completed", "extra": "1"}


def test_set_and_read_sets_fields_and_reads_the_whole_record(store: CoordinationStore, run_id: str) -> None:
    assert store.set_and_read(run_id, {"node:a:result": "{}"}) == {
        "plan": "{}",
        "status": "running",
        "node:a:result": "{}",
    }


def test_incr_counts_from_zero(store: CoordinationStore, run_id: str) -> None:
    assert [store.incr(run_id, "n"), store.incr(run_id, "n"), store.incr(run_id, "n", 5)] == [1, 2, 7]
    assert store.get_fields(run_id, ["n"]) == ["7"]


def test_set_unless_is_the_start_guard(store: CoordinationStore, run_id: str) -> None:
    guards = ["node:b:decided", "cancelled"]
    assert store.set_unless(run_id, "node:b:started:0", "w0", guards) is True
    store.set_fields(run_id, {"node:b:decided": "{}"})
    assert store.set_unless(run_id, "node:b:started:1", "w1", guards) is False
    assert store.get_fields(run_id, ["node:b:started:0", "node:b:started:1"]) == ["w0", None]


# --- claims --------------------------------------------------------------------------


def test_a_claim_is_won_once_with_its_value(store: CoordinationStore, run_id: str) -> None:
    assert store.claim(run_id, "final") is True
    assert store.claim(run_id, "final") is False
    assert store.claim(run_id, "node:b:decided", '{"status": "completed"}') is True
    assert store.get_fields(run_id, ["final", "node:b:decided"]) == ["1", '{"status": "completed"}']


def test_a_claim_has_one_winner_among_threads(store: CoordinationStore, run_id: str) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait(timeout=10)
        wins.append(store.claim(run_id, "node:a:launched"))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(wins) == [False] * 7 + [True]


def test_claim_and_get_claims_once_and_reads_another_field(store: CoordinationStore, run_id: str) -> None:
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled") == (True, None)
    store.set_fields(run_id, {"cancelled": "1"})
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled") == (False, "1")
    assert store.claim_and_get(run_id, "node:c:launched", "cancelled") == (True, "1")


def test_claim_and_read_claims_once_and_reads_the_record_and_envelopes(store: CoordinationStore, run_id: str) -> None:
    store.record_step(run_id, "b", 1, "e1", TTL)
    claimed, record, envelopes = store.claim_and_read(run_id, "node:b:settled", "b")
    assert claimed is True
    assert record == {"plan": "{}", "status": "running", "node:b:settled": "1"}
    assert envelopes == {1: "e1"}
    assert store.claim_and_read(run_id, "node:b:settled", "b")[0] is False
    assert store.claim_and_read(run_id, "node:c:settled", "c") == (True, {**record, "node:c:settled": "1"}, {})


# --- steps ---------------------------------------------------------------------------


def test_record_step_counts_distinct_steps_and_replaces_without_keep(store: CoordinationStore, run_id: str) -> None:
    assert store.record_step(run_id, "b", 0, "e0", TTL) == 1
    assert store.record_step(run_id, "b", 1, "e1", TTL) == 2
    assert store.record_step(run_id, "b", 1, "e1-again", TTL) == 2  # a redelivered step counts once
    assert store.record_step(run_id, "other", 0, "x", TTL) == 1
    assert store.step_envelopes(run_id, "b") == {0: "e0", 1: "e1-again"}


def test_record_step_with_keep_leaves_a_filed_envelope(store: CoordinationStore, run_id: str) -> None:
    assert store.record_step(run_id, "b", 0, "own", TTL) == 1
    assert store.record_step(run_id, "b", 0, "lost", TTL, keep=True) == 1
    assert store.record_step(run_id, "b", 1, "lost", TTL, keep=True) == 2
    assert store.step_envelopes(run_id, "b") == {0: "own", 1: "lost"}


def test_add_step_says_whether_it_filed_the_envelope(store: CoordinationStore, run_id: str) -> None:
    assert store.record_step(run_id, "b", 0, "own", TTL) == 1
    assert store.add_step(run_id, "b", 0, "lost", TTL) == (1, False)  # the step's own stays
    assert store.add_step(run_id, "b", 1, "lost", TTL) == (2, True)
    assert store.step_envelopes(run_id, "b") == {0: "own", 1: "lost"}
    # The same call sent again (its reply was lost on the way back): it did write, and it says so.
    assert store.add_step(run_id, "b", 1, "lost", TTL) == (2, True)


def test_file_step_records_and_reads_one_run_field(store: CoordinationStore, run_id: str) -> None:
    assert store.file_step(run_id, "b", 0, "e0", TTL, "node:b:decided") == (1, None)
    assert store.file_step(run_id, "b", 0, "e0-again", TTL, "node:b:decided") == (1, None)
    store.set_fields(run_id, {"node:b:decided": "yes"})
    assert store.file_step(run_id, "b", 3, "e3", TTL, "node:b:decided") == (2, "yes")
    assert store.step_envelopes(run_id, "b") == {0: "e0-again", 3: "e3"}


def test_step_envelopes_and_counts_of_blocks_with_and_without_steps(store: CoordinationStore, run_id: str) -> None:
    store.record_step(run_id, "a", 0, "ea", TTL)
    store.record_step(run_id, "b", 0, "eb0", TTL)
    store.record_step(run_id, "b", 2, "eb2", TTL)
    assert store.step_envelopes(run_id, "none") == {}
    assert store.step_counts(run_id, ["a", "b", "none"]) == {"a": 1, "b": 2, "none": 0}
    assert store.step_counts(run_id, []) == {}


# --- lists ---------------------------------------------------------------------------


def test_push_items_and_pop_item_are_first_in_first_out(store: CoordinationStore, run_id: str) -> None:
    store.push_items(run_id, "feed", ["a", "b"], TTL)
    store.push_items(run_id, "feed", [], TTL)
    store.push_items(run_id, "feed", ["c"], TTL)
    store.push_items(run_id, "other", ["z"], TTL)
    assert [store.pop_item(run_id, "feed") for _ in range(4)] == ["a", "b", "c", None]
    assert store.pop_item(run_id, "other") == "z"


def test_push_items_with_a_mark_sets_it_in_the_same_write(store: CoordinationStore, run_id: str) -> None:
    store.push_items(run_id, "feed", ["a"], TTL, mark=("node:b:published", "0"))
    store.push_items(run_id, "other", [], TTL, mark=("node:c:published", "0"))  # a mark alone is written too
    assert store.get_fields(run_id, ["node:b:published", "node:c:published"]) == ["0", "0"]
    assert store.pop_item(run_id, "feed") == "a"


# --- deadlines and leases ----------------------------------------------------------------


def test_the_first_deadline_of_a_block_stays(store: CoordinationStore, run_id: str) -> None:
    store.add_deadline(run_id, "b", 100.0, TTL)
    store.add_deadline(run_id, "b", 200.0, TTL)  # a launch finished later does not push it back
    assert (run_id, "b") in store.due_deadlines(150.0, 10_000)
    store.drop_deadline(run_id, "b")
    assert (run_id, "b") not in store.due_deadlines(150.0, 10_000)


def expired(store: CoordinationStore, run_id: str, now: float) -> list[str]:
    """The nodes of ``run_id`` whose lease ran out at ``now`` (other runs may hold leases in a shared store)."""
    return [node for run, node in store.expired_leases(now, 100_000) if run == run_id]


def test_a_claim_with_a_lease_holds_it_until_it_runs_out(store: CoordinationStore, run_id: str) -> None:
    now = time.time()
    assert store.claim(run_id, "node:a:launched", lease=Lease("a", now + 10))
    assert not store.claim(run_id, "node:a:launched", lease=Lease("a", now + 99))  # not won: no lease taken
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled", Lease("b", now + 20)) == (True, None)
    assert store.claim_and_read(run_id, "node:c:settled", "c", Lease("c", now + 30))[0]
    assert expired(store, run_id, now) == []
    assert expired(store, run_id, now + 25) == ["a", "b"]  # earliest first
    store.renew_lease(run_id, "a", now + 40)
    store.drop_lease(run_id, "b")
    store.renew_lease(run_id, "b", now + 5)  # renewing a dropped lease does not take it again
    assert expired(store, run_id, now + 35) == ["c"]
    assert expired(store, run_id, now + 45) == ["c", "a"]


def test_a_lease_that_ran_out_is_taken_over_once(store: CoordinationStore) -> None:
    run_id, now = new_id(), time.time()
    store.create_run(run_id, {"plan": "{}"}, TTL, leases=[Lease("a", now - 1), Lease("b", now + 60)])
    assert not store.take_lease(run_id, "b", now, now + 60)  # still held
    assert not store.take_lease(run_id, "none", now, now + 60)  # nobody holds it
    takers: list[bool] = []
    threads = [
        threading.Thread(target=lambda: takers.append(store.take_lease(run_id, "a", now, now + 60))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(takers) == [False] * 7 + [True]
    assert expired(store, run_id, now + 30) == []  # held by its taker now
    store.drop_lease(run_id, "a")
    store.drop_lease(run_id, "b")
    assert expired(store, run_id, now + 3600) == []


def test_a_claim_with_a_lease_on_a_gone_run_takes_no_lease(store: CoordinationStore, gone: str) -> None:
    now = time.time()
    assert not store.claim(gone, "node:a:launched", lease=Lease("a", now - 1))
    assert store.claim_and_get(gone, "node:b:launched", "cancelled", Lease("b", now - 1)) == (False, None)
    assert store.claim_and_read(gone, "node:c:settled", "c", Lease("c", now - 1)) == (False, {}, {})
    assert expired(store, gone, now) == []
    assert_nothing_of(store, gone)


# --- the end of a run ------------------------------------------------------------------


def test_finish_marks_the_run_done_and_wait_returns_its_result(store: CoordinationStore, run_id: str) -> None:
    assert store.wait(run_id, 0) is None
    assert store.finish(run_id, {"status": "completed", "result": '{"x": 1}'}, TTL) is True
    assert store.run_record(run_id) == {"plan": "{}", "status": "completed", "result": '{"x": 1}', "done": "1"}
    assert store.wait(run_id, 0) == '{"x": 1}'
    assert store.wait(run_id, 5) == '{"x": 1}'


def test_a_finished_run_without_a_result_waits_as_empty(store: CoordinationStore, run_id: str) -> None:
    assert store.finish(run_id, {"status": "completed"}, TTL) is True
    assert store.wait(run_id, 0) == ""


def test_finish_with_a_claim_writes_once(store: CoordinationStore, run_id: str) -> None:
    assert store.finish(run_id, {"status": "completed", "result": "first"}, TTL, claim="final") is True
    assert store.finish(run_id, {"status": "failed", "result": "second"}, TTL, claim="final") is False
    assert store.run_record(run_id) == {
        "plan": "{}",
        "status": "completed",
        "result": "first",
        "final": "1",
        "done": "1",
    }
    assert store.wait(run_id, 0) == "first"


def test_wait_times_out_with_none(store: CoordinationStore, run_id: str) -> None:
    started = time.monotonic()
    assert store.wait(run_id, 0.3) is None
    assert time.monotonic() - started >= 0.3


def test_finish_wakes_a_waiter_in_another_thread(store: CoordinationStore, run_id: str) -> None:
    results: list[str | None] = []
    waiting = threading.Event()

    def wait() -> None:
        waiting.set()
        results.append(store.wait(run_id, 60))

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    assert waiting.wait(timeout=10)
    timer = threading.Timer(0.2, store.finish, args=(run_id, {"status": "completed", "result": "{}"}, TTL))
    timer.start()
    try:
        waiter.join(timeout=30)
    finally:
        timer.join(timeout=10)
    assert results == ["{}"]
    assert time.monotonic() - started < 30  # woken, not timed out


# --- sticky keys -----------------------------------------------------------------------


def test_a_sticky_key_keeps_its_first_owner_until_taken_over(store: CoordinationStore) -> None:
    scope = f"pool-{new_id()[:8]}"
    assert store.stick(scope, "k", "a@h", TTL) == "a@h"
    assert store.stick(scope, "k", "b@h", TTL) == "a@h"
    assert store.stick(scope, "k", "b@h", TTL, take_over=True) == "b@h"
    assert store.stick(scope, "other", "c@h", TTL) == "c@h"


# --- a run whose record is gone ----------------------------------------------------------

REFUSED = [
    pytest.param(lambda s, r: s.set_fields(r, {"cancelled": "1"}), id="set_fields"),
    pytest.param(lambda s, r: s.set_and_read(r, {"node:b:result": "{}"}), id="set_and_read"),
    pytest.param(lambda s, r: s.incr(r, "n"), id="incr"),
    pytest.param(lambda s, r: s.set_unless(r, "node:b:started:0", "w", ["cancelled"]), id="set_unless"),
    pytest.param(lambda s, r: s.record_step(r, "b", 1, "e1", TTL), id="record_step"),
    pytest.param(lambda s, r: s.record_step(r, "b", 1, "e1", TTL, keep=True), id="record_step-keep"),
    pytest.param(lambda s, r: s.add_step(r, "b", 1, "e1", TTL), id="add_step"),
    pytest.param(lambda s, r: s.file_step(r, "b", 1, "e1", TTL, "node:b:decided"), id="file_step"),
    pytest.param(lambda s, r: s.push_items(r, "feed", ["y"], TTL), id="push_items"),
    pytest.param(lambda s, r: s.push_items(r, "feed", [], TTL, mark=("node:b:published", "0")), id="push_items-mark"),
]

NOT_WON = [
    pytest.param(lambda s, r: s.claim(r, "final"), False, id="claim"),
    pytest.param(lambda s, r: s.claim_and_get(r, "node:b:launched", "cancelled"), (False, None), id="claim_and_get"),
    pytest.param(lambda s, r: s.claim_and_read(r, "node:b:settled", "b"), (False, {}, {}), id="claim_and_read"),
    pytest.param(lambda s, r: s.finish(r, {"status": "completed", "result": "{}"}, TTL), False, id="finish"),
    pytest.param(lambda s, r: s.finish(r, {"result": "{}"}, TTL, claim="final"), False, id="finish-claim"),
    pytest.param(lambda s, r: s.push_items(r, "feed", [], TTL), None, id="push_items-nothing"),
]


def assert_nothing_of(store: CoordinationStore, run_id: str) -> None:
    """Nothing of the run can be read: no record, no field, no envelope, no item, no result."""
    assert store.run_record(run_id) is None
    assert store.get_fields(run_id, ["plan", "cancelled", "final", "n"]) == [None, None, None, None]
    assert store.step_envelopes(run_id, "b") == {}
    assert store.step_counts(run_id, ["b"]) == {"b": 0}
    assert store.pop_item(run_id, "feed") is None
    assert store.wait(run_id, 0) is None


@pytest.mark.parametrize("write", REFUSED)
def test_a_write_to_a_gone_run_raises_unknown_run_and_writes_nothing(
    store: CoordinationStore, gone: str, write: Callable[[Any, str], object]
) -> None:
    with pytest.raises(UnknownRun) as raised:
        write(store, gone)
    assert raised.value.run_id == gone
    assert_nothing_of(store, gone)


@pytest.mark.parametrize(("write", "expected"), NOT_WON)
def test_a_claim_or_finish_on_a_gone_run_is_not_won_and_writes_nothing(
    store: CoordinationStore, gone: str, write: Callable[[Any, str], object], expected: object
) -> None:
    assert write(store, gone) == expected
    assert_nothing_of(store, gone)


def test_reads_of_a_gone_run_find_nothing(store: CoordinationStore, gone: str) -> None:
    assert_nothing_of(store, gone)
    assert store.wait(gone, 0.1) is None


def test_keys_of_a_run_expire_with_it(store: CoordinationStore) -> None:
    run_id = new_id()
    store.create_run(run_id, {"plan": "{}"}, 1)
    store.record_step(run_id, "b", 0, "e0", 1)  # filing renews the run by its ttl: here, as long as it had
    store.file_step(run_id, "c", 0, "e0", 1, "node:c:decided")
    store.push_items(run_id, "feed", ["x", "y"], TTL)  # a list lives no longer than its run
    assert store.step_counts(run_id, ["b", "c"]) == {"b": 1, "c": 1}
    wait_for(lambda: store.run_record(run_id) is None, EXPIRE_WITHIN, "run not expired")
    assert_nothing_of(store, run_id)
    assert store.step_counts(run_id, ["c"]) == {"c": 0}


def test_a_held_step_is_listed_until_released_and_a_silent_worker_holding_one_is_lost(
    store: CoordinationStore, run_id: str
) -> None:
    worker, member = f"w-{new_id()}", '["run", "b", 0]'
    store.beat(worker, 1)
    assert store.set_unless(run_id, "started:0", "w", [], Held(worker, member, TTL))  # the start guard holds it
    assert store.held_steps(worker) == [member]
    wait_for(lambda: worker in store.lost_workers(1000), EXPIRE_WITHIN, "a worker whose heartbeat ran out not lost")
    store.release(worker, member)
    assert store.held_steps(worker) == []
    assert worker not in store.lost_workers(1000)  # silent, holding nothing: not lost


TAKE_GUARDS = ["node:b:decided", "node:b:settled", "cancelled"]
PASSED = ("node:b:started:0", '"delivery": "t0:0"')


def test_a_step_taken_by_a_pool_process_is_held_until_its_start_guard_holds_it_or_lets_it_go(
    store: CoordinationStore, run_id: str
) -> None:
    worker = f"w-{new_id()}"
    taken, refused = Held(worker, '["run", "b", 0, 7]', TTL), Held(worker, '["run", "c", 0, 7]', TTL)
    assert store.take_step(run_id, "b", 0, taken, TAKE_GUARDS, PASSED) is True
    assert (
        store.take_step(run_id, "c", 0, refused, ["node:c:decided"], ("node:c:started:0", '"delivery": "t1:0"')) is True
    )
    assert store.held_steps(worker) == sorted([taken.member, refused.member])
    assert store.set_unless(run_id, "node:b:started:0", "w", ["node:b:decided"], taken) is True  # held once more
    store.set_fields(run_id, {"node:c:decided": "{}"})
    assert store.set_unless(run_id, "node:c:started:0", "w", ["node:c:decided"], refused) is False  # let go
    assert store.held_steps(worker) == [taken.member]
    assert (
        store.take_step(run_id, "b", 0, taken, TAKE_GUARDS, PASSED) is True
    )  # landing after the start guard: the same
    assert store.held_steps(worker) == [taken.member]  # member, held once, and let go of by its filing
    store.file_step(run_id, "b", 0, "e0", TTL, "node:b:decided", held=taken)
    assert store.held_steps(worker) == []
    assert store.take_step(run_id, "b", 0, taken, TAKE_GUARDS, PASSED) is False  # filed: nothing to hold


def test_a_hold_landing_after_its_delivery_passed_its_start_guard_is_refused(
    store: CoordinationStore, run_id: str
) -> None:
    """The pool process started this delivery, failed, sent its retry on and let go of the step before its worker
    held it: that hold would name a step nobody files under it. The retry's own delivery is held."""
    worker = f"w-{new_id()}"
    store.set_fields(run_id, {"node:b:started:0": json.dumps({"task_id": "t0", "delivery": "t0:0"})})
    holding = Held(worker, '["run", "b", 0]', TTL)
    assert store.take_step(run_id, "b", 0, holding, TAKE_GUARDS, PASSED) is False
    assert store.held_steps(worker) == []
    assert store.take_step(run_id, "b", 0, holding, TAKE_GUARDS, ("node:b:started:0", '"delivery": "t0:1"')) is True
    store.release(worker, holding.member)


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(lambda s, r: s.set_fields(r, {"node:b:decided": "{}"}), id="decided"),
        pytest.param(lambda s, r: s.set_fields(r, {"node:b:settled": "1"}), id="settled"),
        pytest.param(lambda s, r: s.set_fields(r, {"cancelled": "1"}), id="cancelled"),
        pytest.param(lambda s, r: s.file_step(r, "b", 0, "e0", TTL, "node:b:decided"), id="filed"),
    ],
)
def test_a_step_that_would_not_start_is_not_held_when_taken(
    store: CoordinationStore, run_id: str, before: Callable[[CoordinationStore, str], object]
) -> None:
    worker = f"w-{new_id()}"
    before(store, run_id)
    assert store.take_step(run_id, "b", 0, Held(worker, '["run", "b", 0]', TTL), TAKE_GUARDS, PASSED) is False
    assert store.held_steps(worker) == []


def test_a_step_of_a_gone_run_is_not_held_and_its_start_guard_lets_a_taken_one_go(
    store: CoordinationStore, gone: str
) -> None:
    worker = f"w-{new_id()}"
    holding = Held(worker, '["gone", "b", 0]', TTL)
    assert store.take_step(gone, "b", 0, holding, TAKE_GUARDS, PASSED) is False
    assert store.held_steps(worker) == []
    with pytest.raises(UnknownRun):
        store.set_unless(gone, "node:b:started:0", "w", [], holding)
    assert store.held_steps(worker) == []


def test_the_brokers_of_live_workers_are_those_their_heartbeats_name(store: CoordinationStore) -> None:
    tag = new_id()
    named, unnamed, silent = f"w-{tag}-named", f"w-{tag}-unnamed", f"w-{tag}-silent"
    store.beat(named, 60, f"redis://127.0.0.1:6379/{tag}")
    store.beat(unnamed, 60)  # a worker of an earlier release names none
    store.beat(silent, 1, f"amqp://127.0.0.1:5672/{tag}")
    assert {f"redis://127.0.0.1:6379/{tag}", f"amqp://127.0.0.1:5672/{tag}"} <= store.live_brokers()
    wait_for(
        lambda: f"amqp://127.0.0.1:5672/{tag}" not in store.live_brokers(), EXPIRE_WITHIN, "a silent worker's broker"
    )
    assert f"redis://127.0.0.1:6379/{tag}" in store.live_brokers()
    assert "" not in store.live_brokers() and "1" not in store.live_brokers()


def test_a_run_s_first_event_is_written_with_its_record_where_the_store_keeps_the_stream(
    store: CoordinationStore,
) -> None:
    run_id = new_id()
    entry = json.dumps({"event_id": run_id, "event_type": "workflow_started", "data": {"instance_id": run_id}})
    wrote = store.create_run(run_id, {"status": "running"}, TTL, first_event=entry)
    if isinstance(store, MemoryStore):  # this process's events are the event service's own
        assert wrote is False
        return
    assert wrote is True
    assert isinstance(store, RedisStore)
    newest = store.client.xrevrange(STREAM_KEY, count=50)
    assert entry in [fields["event"] for _id, fields in newest]
    assert store.client.ttl(STREAM_KEY) > 0
