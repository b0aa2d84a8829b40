"""The Redis coordination store's step filing, against the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from namel3ss_celery.worker.redis_store import RedisStore
from namel3ss_celery.worker.store import steps_key

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
