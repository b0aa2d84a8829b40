"""No key of a run ever lives in Redis without an expiry, whatever is done to the run.

Every write and read of the store on an expired or never-created run leaves no key without a TTL (and
none at all for a run never created); on a live run, every key of the run has a TTL after each write,
and no satellite key (step envelopes, lists) outlives the run's record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from namel3ss_celery.errors import UnknownRun
from namel3ss_celery.plan.fields import done_key, list_key, run_key, steps_key
from namel3ss_celery.worker.redis_store import RedisStore

pytestmark = pytest.mark.integration

TTL = 60


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def keys_of(store: RedisStore, run_id: str) -> dict[str, int]:
    """Every key of the run in Redis, with its TTL in milliseconds (-1: none)."""
    return {key: int(store.client.pttl(key)) for key in store.client.scan_iter(match=f"{run_key(run_id)}*")}


def without_expiry(store: RedisStore, run_id: str) -> list[str]:
    return [key for key, ttl in keys_of(store, run_id).items() if ttl == -1]


def every_operation(store: RedisStore, run_id: str) -> None:
    """Every write of the store on the run (refused or not won, as it is gone), then its reads."""
    refused: list[Callable[[], object]] = [
        lambda: store.set_fields(run_id, {"cancelled": "1"}),
        lambda: store.set_and_read(run_id, {"node:b:result": "{}"}),
        lambda: store.incr(run_id, "n"),
        lambda: store.set_unless(run_id, "node:b:started:0", "w", ["cancelled"]),
        lambda: store.record_step(run_id, "b", 0, "e0", TTL),
        lambda: store.record_step(run_id, "b", 0, "e0", TTL, keep=True),
        lambda: store.file_step(run_id, "b", 1, "e1", TTL, "node:b:decided"),
        lambda: store.push_items(run_id, "feed", ["x"], TTL),
    ]
    for write in refused:
        with pytest.raises(UnknownRun):
            write()
    assert store.claim(run_id, "final") is False
    assert store.claim_and_get(run_id, "node:b:launched", "cancelled") == (False, None)
    assert store.claim_and_read(run_id, "node:b:settled", "b") == (False, {}, {})
    assert store.finish(run_id, {"status": "completed", "result": "{}"}, TTL) is False
    assert store.finish(run_id, {"result": "{}"}, TTL, claim="final") is False
    store.push_items(run_id, "feed", [], TTL)
    assert store.pop_item(run_id, "feed") is None
    assert store.run_record(run_id) is None
    assert store.get_fields(run_id, ["plan", "cancelled"]) == [None, None]
    assert store.wait(run_id, 0.1) is None
    assert store.step_counts(run_id, ["b", "c"]) == {"b": 0, "c": 0}
    assert store.step_envelopes(run_id, "b") == {}


def test_a_never_created_run_leaves_no_key_at_all(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    every_operation(store, run_id)
    assert keys_of(store, run_id) == {}


def test_an_expired_run_leaves_no_key_without_an_expiry(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, 1)
    store.record_step(run_id, "b", 0, "e0", 1)  # with a longer ttl, filing would renew the run
    store.push_items(run_id, "feed", ["x"], TTL)
    deadline = time.monotonic() + 10
    while store.run_record(run_id) is not None:
        assert time.monotonic() < deadline, "the run did not expire"
        time.sleep(0.05)
    every_operation(store, run_id)
    assert without_expiry(store, run_id) == []
    assert keys_of(store, run_id) == {}  # its envelopes and list expired with it


def test_every_key_of_a_live_run_has_an_expiry_after_each_write(store: RedisStore) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, TTL)
    writes: list[tuple[str, Callable[[], object]]] = [
        ("set_fields", lambda: store.set_fields(run_id, {"status": "running"})),
        ("set_and_read", lambda: store.set_and_read(run_id, {"node:a:result": "{}"})),
        ("incr", lambda: store.incr(run_id, "n")),
        ("set_unless", lambda: store.set_unless(run_id, "node:b:started:0", "w", ["cancelled"])),
        ("claim", lambda: store.claim(run_id, "node:b:launched")),
        ("claim_and_get", lambda: store.claim_and_get(run_id, "node:c:launched", "cancelled")),
        ("record_step", lambda: store.record_step(run_id, "b", 0, "e0", TTL)),
        ("record_step keep", lambda: store.record_step(run_id, "b", 1, "e1", TTL, keep=True)),
        ("file_step", lambda: store.file_step(run_id, "c", 0, "e0", TTL, "node:c:decided")),
        ("push_items", lambda: store.push_items(run_id, "feed", ["x", "y"], TTL)),
        ("pop_item", lambda: store.pop_item(run_id, "feed")),
        ("claim_and_read", lambda: store.claim_and_read(run_id, "node:b:settled", "b")),
        ("finish", lambda: store.finish(run_id, {"status": "completed", "result": "{}"}, TTL, claim="final")),
        ("finish again", lambda: store.finish(run_id, {"status": "completed", "result": "{}"}, TTL)),
        ("record_step late", lambda: store.record_step(run_id, "b", 2, "e2", TTL, keep=True)),
    ]
    for name, write in writes:
        write()
        keys = keys_of(store, run_id)
        assert run_key(run_id) in keys
        assert [key for key, ttl in keys.items() if ttl <= 0] == [], f"after {name}"
    assert set(keys_of(store, run_id)) == {
        run_key(run_id),
        steps_key(run_id, "b"),
        steps_key(run_id, "c"),
        list_key(run_id, "feed"),
        done_key(run_id),
    }


@pytest.mark.parametrize("filed_for", [5, 600], ids=["shorter-than-the-run", "longer-than-the-run"])
def test_envelopes_and_lists_expire_no_later_than_their_run(store: RedisStore, filed_for: int) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(run_id, {"plan": "{}"}, TTL)
    store.record_step(run_id, "b", 0, "e0", filed_for)
    store.file_step(run_id, "c", 0, "e0", filed_for, "node:c:decided")
    store.push_items(run_id, "feed", ["x"], filed_for)
    # Absolute expiry times (PEXPIRETIME): two PTTL reads a millisecond apart would not compare.
    run_ends = int(store.client.execute_command("PEXPIRETIME", run_key(run_id)))
    for key in (steps_key(run_id, "b"), steps_key(run_id, "c"), list_key(run_id, "feed")):
        assert 0 < int(store.client.pttl(key)) <= filed_for * 1000, key
        assert int(store.client.execute_command("PEXPIRETIME", key)) <= run_ends, key
