"""A store that does not answer for a while: the engine rides it out, for a bounded time."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.engine import patience
from namel3ss_celery.engine.control import BlockControl
from namel3ss_celery.engine.patience import patiently
from namel3ss_celery.errors import StoreUnavailable
from namel3ss_celery.plan import fields
from namel3ss_celery.worker.store import MemoryStore


class Outage(MemoryStore):
    """A memory store whose reads fail ``failures`` times before it answers again."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def get_fields(self, run_id: str, names: Any) -> list[str | None]:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailable("connection refused", store="memory")
        return super().get_fields(run_id, names)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patience, "FIRST_DELAY", 0.001)
    monkeypatch.setattr(patience, "MAX_DELAY", 0.002)


def test_a_call_is_tried_again_until_the_store_answers() -> None:
    store = Outage(failures=3)
    store.create_run("r", {fields.CANCELLED: "1"}, 60)
    assert patiently(lambda: store.get_fields("r", [fields.CANCELLED]), "reading") == ["1"]
    assert store.calls == 4


def test_patience_runs_out() -> None:
    store = Outage(failures=10**6)
    with pytest.raises(StoreUnavailable):
        patiently(lambda: store.get_fields("r", [fields.CANCELLED]), "reading", patience=0.05)


def test_a_running_step_is_not_stopped_by_a_store_that_does_not_answer() -> None:
    store = Outage(failures=1)
    store.create_run("r", {fields.CANCELLED: "1"}, 60)
    control = BlockControl(store, "r", "b")
    assert control.asked_to_stop() is False  # the store did not answer: go on
    assert control.asked_to_stop() is True  # it answers: the run was cancelled
