"""The in-memory coordination store: records, claims, step envelopes, expiry, waiting."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from namel3ss_celery.errors import UnknownRun
from namel3ss_celery.worker import store as store_module
from namel3ss_celery.worker.store import MemoryStore, done_key, run_key, steps_key


def test_keys_live_under_one_prefix() -> None:
    assert (run_key("r"), steps_key("r", "b"), done_key("r")) == ("n3:run:r", "n3:run:r:steps:b", "n3:run:r:done")


def test_a_run_record_is_a_copy_of_its_fields() -> None:
    store = MemoryStore()
    assert store.run_record("r") is None
    store.create_run("r", {"plan": "{}", "status": "running"}, ttl=60)
    store.set_fields("r", {"status": "done-soon", "extra": "1"})
    record = store.run_record("r")
    assert record is not None and record == {"plan": "{}", "status": "done-soon", "extra": "1"}
    record["status"] = "changed"
    assert store.run_record("r")["status"] == "done-soon"  # type: ignore[index]


def test_a_claim_is_won_once() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    assert store.claim("r", "final") is True
    assert store.claim("r", "final") is False
    assert store.claim("r", "other", "x") is True
    assert store.run_record("r") == {"final": "1", "other": "x"}


def test_claim_and_get_claims_once_and_reads_another_field() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    assert store.claim_and_get("r", "node:b:launched", "cancelled") == (True, None)
    store.set_fields("r", {"cancelled": "1"})
    assert store.claim_and_get("r", "node:b:launched", "cancelled") == (False, "1")
    assert store.claim_and_get("r", "node:c:launched", "cancelled") == (True, "1")


def test_a_claim_has_one_winner_among_threads() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait(timeout=5)
        wins.append(store.claim("r", "node:a:launched"))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(wins) == [False] * 7 + [True]


def test_record_step_counts_distinct_steps() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    assert store.record_step("r", "b", 0, "e0", ttl=60) == 1
    assert store.record_step("r", "b", 1, "e1", ttl=60) == 2
    assert store.record_step("r", "b", 1, "e1-again", ttl=60) == 2  # a redelivered step counts once
    assert store.record_step("r", "other", 0, "x", ttl=60) == 1
    assert store.step_envelopes("r", "b") == {0: "e0", 1: "e1-again"}
    assert store.step_envelopes("r", "nothing") == {}


def test_records_and_envelopes_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(store_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = MemoryStore()
    store.create_run("r", {"a": "1"}, ttl=10)
    store.record_step("r", "b", 0, "e", ttl=10)
    now[0] += 9
    assert store.run_record("r") == {"a": "1"}
    now[0] += 2
    assert store.run_record("r") is None
    assert store.step_envelopes("r", "b") == {}


def test_finish_marks_the_run_done_and_renews_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(store_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = MemoryStore()
    store.create_run("r", {"status": "running"}, ttl=5)
    now[0] = 4
    store.finish("r", {"status": "completed", "result": "{}"}, ttl=100)
    now[0] = 50
    assert store.run_record("r") == {"status": "completed", "result": "{}", "done": "1"}


def test_wait_times_out_and_returns_none() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    started = time.monotonic()
    assert store.wait("r", 0.1) is None
    assert time.monotonic() - started >= 0.09
    assert store.wait("unknown", 0) is None


def test_wait_returns_the_result_once_finished() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    store.finish("r", {"status": "completed", "result": '{"x": 1}'}, ttl=60)
    assert store.wait("r", 0) == '{"x": 1}'


def test_a_finished_run_without_a_result_field_waits_as_empty() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    store.finish("r", {"status": "completed"}, ttl=60)
    assert store.wait("r", 0) == ""


def test_finish_with_a_claim_writes_once() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    assert store.finish("r", {"result": "first"}, 60, claim="final") is True
    assert store.finish("r", {"result": "second"}, 60, claim="final") is False
    assert store.run_record("r") == {"final": "1", "result": "first", "done": "1"}


def test_finish_wakes_a_waiter() -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=60)
    timer = threading.Timer(0.05, store.finish, args=("r", {"status": "failed", "result": "{}"}, 60))
    timer.start()
    try:
        started = time.monotonic()
        assert store.wait("r", 10) == "{}"
        assert time.monotonic() - started < 5
    finally:
        timer.join(timeout=5)
    assert store.run_record("r")["status"] == "failed"  # type: ignore[index]


def test_a_sticky_key_keeps_its_first_owner_until_taken_over_or_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    assert store.stick("pool", "k", "a@h", 10) == "a@h"
    assert store.stick("pool", "k", "b@h", 10) == "a@h"
    assert store.stick("pool", "k", "b@h", 10, take_over=True) == "b@h"
    later = time.monotonic() + 11
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert store.stick("pool", "k", "c@h", 10) == "c@h"  # unused for longer than its ttl: forgotten


def test_incr_refuses_a_run_that_is_gone() -> None:
    store = MemoryStore()
    with pytest.raises(UnknownRun):
        store.incr("gone", "n")
    assert store.run_record("gone") is None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's ``time.monotonic()``, set by the test."""
    now = [1000.0]
    monkeypatch.setattr(store_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_an_expired_run_is_written_by_no_write(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("r", {"plan": "{}"}, ttl=10)
    clock[0] += 11
    with pytest.raises(UnknownRun):
        store.set_fields("r", {"cancelled": "1"})
    with pytest.raises(UnknownRun):
        store.set_and_read("r", {"x": "1"})
    with pytest.raises(UnknownRun):
        store.record_step("r", "b", 0, "e", ttl=60)
    with pytest.raises(UnknownRun):
        store.file_step("r", "b", 0, "e", 60, "node:b:decided")
    with pytest.raises(UnknownRun):
        store.push_items("r", "feed", ["x"], ttl=60)
    assert store.claim("r", "final") is False
    assert store.claim_and_get("r", "node:b:launched", "cancelled") == (False, None)
    assert store.claim_and_read("r", "node:b:settled", "b") == (False, {}, {})
    assert store.finish("r", {"result": "{}"}, 60) is False
    assert store.finish("r", {"result": "{}"}, 60, claim="final") is False
    assert store.run_record("r") is None
    assert (store.step_envelopes("r", "b"), store.pop_item("r", "feed")) == ({}, None)


def test_lists_expire_with_their_run_when_it_goes_first(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=10)
    store.push_items("r", "feed", ["x", "y"], ttl=100)
    clock[0] += 9
    assert store.pop_item("r", "feed") == "x"
    clock[0] += 2
    assert (store.run_record("r"), store.pop_item("r", "feed")) == (None, None)


def test_a_run_lives_on_while_its_steps_report(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=10)
    clock[0] += 9
    store.record_step("r", "b", 0, "e", ttl=10)  # renews the run: 10 s from now
    clock[0] += 9
    assert store.run_record("r") == {} and store.step_envelopes("r", "b") == {0: "e"}
    clock[0] += 2
    assert (store.run_record("r"), store.step_envelopes("r", "b")) == (None, {})


def test_envelopes_and_lists_expire_in_their_own_ttl_when_it_is_shorter(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=100)
    store.record_step("r", "b", 0, "e", ttl=5)
    store.push_items("r", "feed", ["x"], ttl=5)
    clock[0] += 4
    assert store.step_counts("r", ["b"]) == {"b": 1}
    store.record_step("r", "b", 1, "e1", ttl=5)  # renewed: 5 s from now
    clock[0] += 4
    assert store.step_envelopes("r", "b") == {0: "e", 1: "e1"}
    assert store.pop_item("r", "feed") is None  # not renewed: gone
    clock[0] += 2
    assert store.step_counts("r", ["b"]) == {"b": 0}
    assert store.run_record("r") == {}


def test_a_finished_run_outlives_what_expired_before_it(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("r", {}, ttl=10)
    store.record_step("r", "b", 0, "e", ttl=10)
    clock[0] += 5
    assert store.finish("r", {"result": "{}"}, ttl=100) is True
    clock[0] += 6
    assert store.step_envelopes("r", "b") == {}
    assert store.wait("r", 0) == "{}"


def test_a_new_run_sweeps_expired_keys_away(clock: list[float]) -> None:
    store = MemoryStore()
    store.create_run("old", {}, ttl=1)
    store.record_step("old", "b", 0, "e", ttl=1)
    store.push_items("old", "feed", ["x"], ttl=1)
    clock[0] += 2
    store.create_run("new", {}, ttl=1)
    assert set(store._runs) == {"new"}
    assert not store._steps and not store._lists
