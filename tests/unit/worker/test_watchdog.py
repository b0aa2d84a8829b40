"""The watchdog on the memory store: its heartbeat, and the steps of a worker whose heartbeat ran out."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from typing import Any

import pytest

from namel3ss_celery.engine.home import Home
from namel3ss_celery.engine.lost import HEARTBEAT_TTL, held, held_member
from namel3ss_celery.engine.ports import Held
from namel3ss_celery.plan import fields
from namel3ss_celery.results import TaskStatus
from namel3ss_celery.worker.watchdog import ENDED_GRACE, LOST_EVERY, Watch
from tests.unit.engine.test_conductor import block, report, result_of, start
from tests.waiting import poll


def answering_for_a_heartbeat(conductor: Any, worker: str) -> Watch:
    """``worker``'s watchdog, whose beats have reached the store for a heartbeat's lifetime: its searches for
    lost workers go ahead."""
    now = [0.0]
    watch = Watch(conductor, worker, clock=lambda: now[0])
    watch.beat()
    now[0] = HEARTBEAT_TTL
    return watch


def search_for_lost(watch: Watch) -> None:
    """As many looks as make one search for lost workers (and for the steps of ended processes)."""
    for _ in range(LOST_EVERY):
        watch.look()


def test_a_worker_that_beats_is_not_lost() -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    message = recorder.sent[0]
    conductor.control(message).start(0, "w1", "prefork", 1, "t0", held(message, "w1", 60))
    watch = answering_for_a_heartbeat(conductor, "w1")
    search_for_lost(watch)  # w1 beat, then looks for lost workers: itself is alive
    assert conductor.store.lost_workers(10) == []
    assert result_of(conductor, run_id) is None


def test_the_steps_of_a_worker_whose_heartbeat_ran_out_are_filed_as_lost() -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    first, second = recorder.sent
    conductor.store.beat("gone", 0)  # its last beat, run out at once
    conductor.control(first).start(0, "gone", "prefork", 1, "t0", held(first, "gone", 60))
    report(conductor, second, TaskStatus.COMPLETED, 1)
    watch = answering_for_a_heartbeat(conductor, "alive")
    search_for_lost(watch)
    result = result_of(conductor, run_id)
    assert result is not None
    entry = result.final_result["s0"]
    assert entry["status"] == "failed"
    assert f"its worker gone stopped answering (no heartbeat for {HEARTBEAT_TTL}s)" in entry["error"]
    assert conductor.store.held_steps("gone") == []


def test_an_at_least_once_step_is_not_held_it_is_delivered_again() -> None:
    conductor, recorder, _run_id = start(block("collect", 1))
    assert held(recorder.sent[0], "w1", 60) is not None
    assert held(replace(recorder.sent[0], deliveries=3), "w1", 60) is None


def test_a_held_step_is_read_back_as_joined_by_counting() -> None:
    from namel3ss_celery.engine.lost import held_member, held_message
    from namel3ss_celery.plan.kinds import Join

    _conductor, recorder, _run_id = start(block("all", 2))
    message = replace(recorder.sent[1], join=Join.CHORD)
    back = held_message(held_member(message))
    assert (back.run, back.node, back.index, back.total, back.key) == (message.run, "b", 1, 2, "s1")
    assert (back.strategy, back.fail_fast, back.join) == (message.strategy, message.fail_fast, Join.COUNT)


def test_steps_held_for_a_process_that_ended_are_filed_as_lost_by_their_own_worker() -> None:
    """A pool process ended with a step still held (killed, or recycled while it kept the outcome for a store
    that was down); its worker lives on and beats, so only its own watchdog can see it."""
    conductor, recorder, run_id = start(block("collect", 3))
    ended, running, done = recorder.sent
    conductor.control(ended).start(0, "w1", "prefork", 1, "t0", held(ended, "w1", 60, pid=111))
    conductor.control(running).start(1, "w1", "prefork", 1, "t1", held(running, "w1", 60, pid=222))
    report(conductor, done, TaskStatus.COMPLETED, 3)
    now = [0.0]
    watch = Watch(conductor, "w1", alive=lambda pid: pid == 222, clock=lambda: now[0])
    search_for_lost(watch)
    assert conductor.store.held_steps("w1") == sorted([held_member(ended, 111), held_member(running, 222)])
    now[0] = ENDED_GRACE  # seen ended this long: Celery's own WorkerLostError would have filed it by now
    search_for_lost(watch)
    assert result_of(conductor, run_id) is None  # s1's process is alive: the block waits for it
    assert conductor.store.held_steps("w1") == [held_member(running, 222)]
    entry = conductor.store.step_envelopes(run_id, "b")[0]
    assert "its worker process 111 on w1 ended before the step's outcome was filed" in entry


def test_a_held_step_names_its_process_and_reads_back_without_one() -> None:
    from namel3ss_celery.engine.lost import held_message, held_process

    _conductor, recorder, _run_id = start(block("all", 1))
    message = recorder.sent[0]
    assert held_process(held_member(message, 4242, "i1")) == (4242, "i1")
    assert held_process(held_member(message)) == (0, "")
    older = json.dumps(json.loads(held_member(message))[:8])  # written before members named their process
    assert held_process(older) == (0, "") and held_message(older).key == message.key
    no_incarnation = json.dumps(json.loads(held_member(message, 4242))[:9])
    assert held_process(no_incarnation) == (4242, "")


def test_a_held_step_this_version_cannot_read_is_dropped_and_the_others_are_still_filed() -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    message = recorder.sent[0]
    conductor.store.beat("gone", 0)
    conductor.control(message).start(0, "gone", "prefork", 1, "t0", held(message, "gone", 60, pid=111))
    conductor.store.set_unless(run_id, "unreadable", "x", [], Held("gone", '{"not": "a held step"}', 60))
    assert conductor.enforce_lost_workers() == 1
    assert conductor.store.held_steps("gone") == []
    result = result_of(conductor, run_id)
    assert result is not None and result.final_result["s0"]["status"] == "failed"


def test_a_pid_that_is_no_process_id_is_not_taken_for_an_ended_process() -> None:
    from namel3ss_celery.worker.watchdog import process_alive

    assert process_alive(os.getpid())
    assert process_alive(2**70)  # not a process id (a greenlet's id): nothing says it ended


def test_after_the_store_was_away_other_workers_get_a_heartbeat_s_time_to_beat_again_before_they_are_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every heartbeat runs out while the store is away (restarted, unreachable): a watchdog whose beats reach
    it again waits HEARTBEAT_TTL seconds before it takes a silent worker for lost."""
    conductor, recorder, run_id = start(block("collect", 1))
    message = recorder.sent[0]
    conductor.store.beat("silent", 0)  # its heartbeat has run out; it holds a step
    conductor.control(message).start(0, "silent", "prefork", 1, "t0", held(message, "silent", 60))
    store = conductor.store
    beat = store.beat

    def away(worker: str, ttl: int, broker: str = "") -> None:
        raise ConnectionError("the store is away")

    now = [100.0]
    watch = Watch(conductor, "w1", clock=lambda: now[0])
    monkeypatch.setattr(store, "beat", away)
    watch.beat()
    monkeypatch.setattr(store, "beat", beat)
    watch.beat()  # its beats reach the store again from 100 on
    now[0] = 100 + HEARTBEAT_TTL - 1
    search_for_lost(watch)
    assert result_of(conductor, run_id) is None  # not yet: "silent" may be about to beat again
    now[0] = 100 + HEARTBEAT_TTL
    search_for_lost(watch)
    result = result_of(conductor, run_id)
    assert result is not None and result.final_result["s0"]["status"] == "failed"


def test_a_held_step_whose_filing_fails_stays_held_and_the_others_are_still_filed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    first, second = recorder.sent
    conductor.store.beat("gone", 0)
    conductor.control(first).start(0, "gone", "prefork", 1, "t0", held(first, "gone", 60, pid=1))
    conductor.control(second).start(1, "gone", "prefork", 1, "t1", held(second, "gone", 60, pid=2))
    filed = conductor.file_lost_message

    def flaky(message: Any, task_id: str, reason: str, outcome: Any) -> None:
        if message.index == 0:
            raise ConnectionError("the store went away for this one")
        filed(message, task_id, reason, outcome)

    monkeypatch.setattr(conductor, "file_lost_message", flaky)
    conductor.enforce_lost_workers()
    assert conductor.store.held_steps("gone") == [held_member(first, 1)]  # s0 stays held for a later look
    assert "stopped answering" in conductor.store.step_envelopes(run_id, "b")[1]
    monkeypatch.setattr(conductor, "file_lost_message", filed)
    conductor.enforce_lost_workers()
    result = result_of(conductor, run_id)
    assert result is not None and [e["status"] for e in result.final_result.values()] == ["failed", "failed"]


def test_steps_held_in_an_earlier_incarnation_of_a_restarted_worker_are_filed_as_lost_though_their_pid_lives() -> None:
    """A worker restarted under the same name (a container restarted) beats on, and its new processes may have
    the pids of the old: its watchdog files what its earlier incarnation held, and keeps what this one holds."""
    conductor, recorder, run_id = start(block("collect", 3))
    before, now_running, older = recorder.sent
    conductor.control(before).start(0, "w1", "prefork", 7, "t0", held(before, "w1", 60, pid=7, incarnation="old"))
    conductor.control(now_running).start(1, "w1", "prefork", 7, "t1", held(now_running, "w1", 60, 7, "new"))
    conductor.control(older).start(2, "w1", "prefork", 7, "t2", held(older, "w1", 60, pid=7))  # names none
    assert conductor.enforce_ended_processes("w1", alive=lambda pid: True, incarnation="new") == 1
    assert sorted(conductor.store.held_steps("w1")) == sorted(
        [held_member(now_running, 7, "new"), held_member(older, 7)]
    )
    entry = conductor.store.step_envelopes(run_id, "b")[0]
    assert "its worker w1 was restarted while its process 7 ran the step" in entry


def test_a_lost_workers_step_of_another_brokers_run_is_left_to_that_brokers_live_workers() -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    conductor.home = Home(lambda: conductor.store, lambda: "redis://mine")
    conductor.store.set_fields(run_id, {fields.BROKER: "amqp://theirs"})
    conductor.store.beat("them", 600, "amqp://theirs")  # a worker of the run's broker lives
    conductor.store.beat("gone", 0)
    message = recorder.sent[0]
    conductor.control(message).start(0, "gone", "prefork", 1, "t0", held(message, "gone", 60))
    watch = answering_for_a_heartbeat(conductor, "alive")
    search_for_lost(watch)
    assert result_of(conductor, run_id) is None
    assert len(conductor.store.held_steps("gone")) == 1  # still held, for a worker of its own broker to file
    conductor.store.set_fields(run_id, {fields.BROKER: "redis://mine"})
    search_for_lost(watch)
    assert result_of(conductor, run_id) is not None
    assert conductor.store.held_steps("gone") == []


def test_a_watchdog_s_heartbeat_names_its_broker() -> None:
    conductor, _recorder, _run_id = start(block("collect", 1))
    conductor.home = Home(lambda: conductor.store, lambda: "redis://mine")
    watch = Watch(conductor, "w1", interval=0.01)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        assert poll(lambda: "redis://mine" in conductor.store.live_brokers(), 10) is not None
    finally:
        watch.stopping.set()
        thread.join(5)


def test_a_process_id_used_again_gets_its_grace_afresh() -> None:
    """Seen ended, then no longer named by a held step (filed meanwhile): forgotten. A later step held by a
    new process with that id, which ends too, waits its own grace before it is filed as lost."""
    conductor, recorder, run_id = start(block("collect", 2))
    first, second = recorder.sent
    holding = held(first, "w1", 60, pid=111)
    conductor.control(first).start(0, "w1", "prefork", 111, "t0", holding)
    now = [0.0]
    watch = Watch(conductor, "w1", alive=lambda pid: False, clock=lambda: now[0])
    search_for_lost(watch)  # 111 seen ended at 0
    assert holding is not None
    conductor.store.release("w1", holding.member)  # its step was filed by Celery's own WorkerLostError
    now[0] = 5.0
    search_for_lost(watch)  # no held step names 111 now: forgotten
    conductor.control(second).start(1, "w1", "prefork", 111, "t1", held(second, "w1", 60, pid=111))
    now[0] = ENDED_GRACE + 1.0  # past the first sighting's grace, not the new one's
    search_for_lost(watch)
    assert conductor.store.held_steps("w1") == [held_member(second, 111)]
    now[0] = 2 * ENDED_GRACE + 2.0
    search_for_lost(watch)
    assert conductor.store.held_steps("w1") == []
    assert "its worker process 111 on w1 ended" in conductor.store.step_envelopes(run_id, "b")[1]
