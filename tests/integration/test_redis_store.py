"""The Redis coordination store against the real Redis: what only Redis has (keys, TTLs, scripts, round trips)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from namel3ss_celery.worker.redis_store import RedisStore
from namel3ss_celery.worker.store import done_key, list_key, run_key, steps_key

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def test_file_step_counts_distinct_steps_and_reads_one_run_field(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, 60)
    assert store.file_step(run_id, "b", 0, '{"k": 0}', 60, "node:b:decided") == (1, None)
    assert store.file_step(run_id, "b", 0, '{"k": "again"}', 60, "node:b:decided") == (1, None)  # replaced
    store.set_fields(run_id, {"node:b:decided": "yes"})
    assert store.file_step(run_id, "b", 3, '{"k": 3}', 60, "node:b:decided") == (2, "yes")
    assert store.step_envelopes(run_id, "b") == {0: '{"k": "again"}', 3: '{"k": 3}'}
    assert 0 < store.client.ttl(steps_key(run_id, "b")) <= 60


def test_wait_returns_the_result_of_a_finished_run_and_times_out_for_a_running_one(store: RedisStore) -> None:
    running, finished = uuid.uuid4().hex, uuid.uuid4().hex
    for run_id in (running, finished):
        store.create_run(run_id, {"status": "running"}, 60)
    store.finish(finished, {"status": "completed", "result": '{"x": 1}'}, 60)
    assert store.wait(finished, 5.0) == '{"x": 1}'
    assert store.wait(finished, 0) == '{"x": 1}'
    assert store.wait(running, 0) is None
    started = time.monotonic()
    assert store.wait(running, 0.3) is None
    assert time.monotonic() - started >= 0.3


def test_wait_wakes_when_the_run_finishes(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"status": "running"}, 60)
    timer = threading.Timer(0.2, store.finish, args=(run_id, {"status": "completed", "result": "{}"}, 60))
    timer.start()
    try:
        assert store.wait(run_id, 10.0) == "{}"
    finally:
        timer.join()


def test_finish_with_a_claim_writes_once_and_wakes_waiters(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"status": "running"}, 60)
    assert store.finish(run_id, {"status": "completed", "result": "first"}, 60, claim="final") is True
    assert store.finish(run_id, {"status": "failed", "result": "second"}, 60, claim="final") is False
    assert store.run_record(run_id) == {"status": "completed", "result": "first", "final": "1", "done": "1"}
    assert store.client.lrange(done_key(run_id), 0, -1) == ["1"]
    assert 0 < store.client.ttl(done_key(run_id)) <= 60
    assert 0 < store.client.ttl(run_key(run_id)) <= 60


def test_claim_and_get_claims_once_and_reads_another_field(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, 60)
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled") == (True, None)
    store.set_fields(run_id, {"cancelled": "1"})
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled") == (False, "1")
    assert store.run_record(run_id) == {"plan": "{}", "node:b:launched": "1", "cancelled": "1"}


def test_a_sticky_key_keeps_its_first_owner_until_taken_over_and_expires_on_its_own(store: RedisStore) -> None:
    scope, key = f"pool-{uuid.uuid4().hex[:6]}", "customer-7"
    assert store.stick(scope, key, "a@h", 60) == "a@h"
    assert store.stick(scope, key, "b@h", 60) == "a@h"
    assert store.stick(scope, key, "b@h", 60, take_over=True) == "b@h"
    assert store.stick(scope, "other", "c@h", 60) == "c@h"  # each key on its own
    assert 0 < store.client.ttl(f"n3:sticky:{scope}:{key}") <= 60


def test_incr_counts_in_a_live_run_and_refuses_a_gone_one(store: RedisStore) -> None:
    from namel3ss_celery.errors import UnknownRun

    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, 60)
    assert [store.incr(run_id, "n") for _ in range(2)] == [1, 2]
    gone = uuid.uuid4().hex
    with pytest.raises(UnknownRun):
        store.incr(gone, "n")
    assert not store.client.exists(f"n3:run:{gone}")  # no record without an expiry left behind


def test_a_feed_longer_than_one_lua_unpack_is_pushed_whole(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, 60)
    items = [str(i) for i in range(20_005)]
    store.push_items(run_id, "feed", items, 60)
    assert store.client.llen(list_key(run_id, "feed")) == len(items)
    assert [store.pop_item(run_id, "feed") for _ in range(2)] == ["0", "1"]
    assert store.client.lindex(list_key(run_id, "feed"), -1) == "20004"


def test_keys_of_a_run_with_no_expiry_get_their_own_ttl(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.client.hset(run_key(run_id), "plan", "{}")  # as a run record leaked by an older release
    try:
        store.record_step(run_id, "b", 0, "e0", 30)
        store.push_items(run_id, "feed", ["x"], 30)
        for key in (steps_key(run_id, "b"), list_key(run_id, "feed")):
            assert 0 < store.client.ttl(key) <= 30
    finally:
        store.client.delete(run_key(run_id), steps_key(run_id, "b"), list_key(run_id, "feed"))


class CountingRedis(redis.Redis):  # type: ignore[type-arg]
    """A client that counts the commands it sends (a pipeline sends none through here)."""

    def __init__(self, url: str) -> None:
        super().__init__(connection_pool=redis.ConnectionPool.from_url(url, decode_responses=True))
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_each_write_is_one_round_trip(redis_url: str) -> None:
    client = CountingRedis(redis_url)
    counted = RedisStore(redis_url, client=client)
    run_id = uuid.uuid4().hex
    counted.create_run(run_id, {"plan": "{}"}, 60)
    writes: dict[str, Callable[[], object]] = {
        "set_fields": lambda: counted.set_fields(run_id, {"status": "running"}),
        "set_and_read": lambda: counted.set_and_read(run_id, {"node:a:result": "{}"}),
        "claim": lambda: counted.claim(run_id, "node:b:launched"),
        "claim_and_get": lambda: counted.claim_and_get(run_id, "node:c:launched", "cancelled"),
        "claim_and_read": lambda: counted.claim_and_read(run_id, "node:b:settled", "b"),
        "record_step": lambda: counted.record_step(run_id, "b", 0, "e0", 60),
        "file_step": lambda: counted.file_step(run_id, "b", 1, "e1", 60, "node:b:decided"),
        "push_items": lambda: counted.push_items(run_id, "feed", ["x"], 60),
        "finish": lambda: counted.finish(run_id, {"result": "{}"}, 60, claim="final"),
    }
    try:
        for write in writes.values():
            write()  # the first call of a script may load it (EVALSHA, SCRIPT LOAD, EVALSHA)
        for name, write in writes.items():
            client.sent = []
            write()
            assert client.sent == ["EVALSHA"], name
    finally:
        counted.close()


def test_a_step_filed_renews_its_runs_expiry(redis_url: str) -> None:
    """A run lives on while its steps report: filing sets the run's expiry to ttl from now, if that is later."""
    import uuid

    from namel3ss_celery.plan.fields import run_key
    from namel3ss_celery.worker.redis_store import RedisStore

    store = RedisStore(redis_url)
    try:
        run_id = uuid.uuid4().hex
        store.create_run(run_id, {"plan": "{}"}, 2)
        store.file_step(run_id, "b", 0, "e0", 600, "node:b:decided")
        assert store.client.pttl(run_key(run_id)) > 500_000
        store.record_step(run_id, "b", 1, "e1", 5)  # a shorter ttl never shortens it
        assert store.client.pttl(run_key(run_id)) > 500_000
    finally:
        store.client.delete(run_key(run_id), f"{run_key(run_id)}:steps:b")
        store.close()


def test_a_worker_whose_heartbeat_ran_out_while_holding_steps_is_lost(redis_url: str) -> None:
    """Lost workers are looked for among the workers that beat (a set), not by scanning the keyspace."""
    import uuid

    from namel3ss_celery.engine.ports import Held
    from namel3ss_celery.plan.fields import WORKERS_KEY, run_key
    from namel3ss_celery.worker.redis_store import RedisStore
    from tests.waiting import wait_until

    store = RedisStore(redis_url)
    gone, alive, run_id = f"gone-{uuid.uuid4().hex}", f"alive-{uuid.uuid4().hex}", uuid.uuid4().hex
    try:
        store.create_run(run_id, {"plan": "{}"}, 60)
        store.beat(gone, 1)
        store.beat(alive, 60)
        assert store.set_unless(run_id, "node:b:started:0", "{}", [], Held(gone, "m0", 60))
        assert store.set_unless(run_id, "node:b:started:1", "{}", [], Held(alive, "m1", 60))
        wait_until(lambda: gone in store.lost_workers(100), 10, "the silent worker was not found lost")
        assert alive not in store.lost_workers(100)
        assert store.held_steps(gone) == ["m0"]
        store.release(gone, "m0")
        store.lost_workers(100)  # silent and holding nothing: forgotten
        assert gone not in store.client.smembers(WORKERS_KEY)
    finally:
        store.client.srem(WORKERS_KEY, gone, alive)
        store.client.delete(run_key(run_id), f"n3:worker:{alive}", f"n3:worker:{alive}:steps")
        store.close()
