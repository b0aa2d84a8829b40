"""The late filer: outcomes the store refused for longer than a step waits are filed once it answers."""

from __future__ import annotations

import time

import pytest

from namel3ss_celery.engine.filing import FollowUp
from namel3ss_celery.engine.ports import Held
from namel3ss_celery.engine.runner import StepOutcome
from namel3ss_celery.errors import StoreUnavailable, UnknownRun
from namel3ss_celery.plan.message import StepMessage
from namel3ss_celery.worker import late_filing
from namel3ss_celery.worker.late_filing import LateFiler
from tests.unit.plan.test_message import payload
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(late_filing, "FIRST_DELAY", 0.001)
    monkeypatch.setattr(late_filing, "MAX_DELAY", 0.002)


class Store:
    """Refuses ``down`` calls (filing or settling), then files."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.filed: list[tuple[str, str, bool, Held | None]] = []
        self.followed: list[FollowUp | None] = []

    def _refuse(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise StoreUnavailable("Redis does not answer", store="redis://x")

    def file(self, message: StepMessage, outcome: StepOutcome, keep: bool, held: Held | None) -> FollowUp | None:
        self._refuse()
        self.filed.append((outcome.key, outcome.status, keep, held))
        return FollowUp(message.run, message.node)

    def follow_up(self, action: FollowUp | None) -> None:
        self._refuse()
        self.followed.append(action)


def outcome(key: str = "s") -> StepOutcome:
    now = time.time()
    return StepOutcome(key, "completed", now, now, result=1)


def test_outcomes_are_filed_in_order_once_the_store_answers_then_what_follows_is_done() -> None:
    store = Store(down=5)
    filer = LateFiler(store.file, store.follow_up, give_up_after=60)
    message = StepMessage.decode(payload())
    held = Held("w@host", "member", 60)
    filer.hand_over(message, outcome("a"), held)
    filer.hand_over(message, outcome("b"), None)
    wait_until(lambda: filer.filed == 2, 10, lambda: f"filed {store.filed}")
    assert [(key, status) for key, status, _keep, _held in store.filed] == [("a", "completed"), ("b", "completed")]
    assert store.filed[0][2:] == (False, held)  # replacing: the step never filed its own
    assert store.followed == [FollowUp(message.run, message.node)] * 2
    assert filer.pending() == 0 and filer.dropped == 0


def test_an_outcome_filed_before_the_store_failed_again_is_not_filed_twice() -> None:
    store = Store(down=0)
    calls = {"follow": 0}
    original = store.follow_up

    def follow_up(action: FollowUp | None) -> None:
        calls["follow"] += 1
        if calls["follow"] == 1:
            raise StoreUnavailable("gone again", store="redis://x")
        original(action)

    filer = LateFiler(store.file, follow_up, give_up_after=60)
    filer.hand_over(StepMessage.decode(payload()), outcome(), None)
    wait_until(lambda: filer.filed == 1, 10, "never filed")
    assert len(store.filed) == 1 and len(store.followed) == 1


def test_an_outcome_of_a_run_that_is_gone_is_dropped() -> None:
    def gone(message: StepMessage, outcome: StepOutcome, keep: bool, held: Held | None) -> FollowUp | None:
        raise UnknownRun(message.run)

    filer = LateFiler(gone, lambda _action: None, give_up_after=60)
    filer.hand_over(StepMessage.decode(payload()), outcome(), None)
    wait_until(lambda: filer.dropped == 1, 10, "never dropped")
    assert filer.filed == 0 and filer.pending() == 0


def test_an_outcome_older_than_its_run_can_be_is_given_up() -> None:
    store = Store(down=10**9)
    filer = LateFiler(store.file, store.follow_up, give_up_after=0.05)
    filer.hand_over(StepMessage.decode(payload()), outcome(), None)
    wait_until(lambda: filer.dropped == 1, 10, "never given up")
    assert store.filed == [] and filer.pending() == 0


def test_an_outcome_handed_over_to_be_kept_does_not_replace_one_the_step_filed_itself() -> None:
    """A step that could not start (the store was away) is filed as failed only where no copy of it filed its
    own outcome meanwhile."""
    store = Store(down=2)
    filer = LateFiler(store.file, store.follow_up, give_up_after=60)
    filer.hand_over(StepMessage.decode(payload()), outcome("a"), None, keep=True)
    wait_until(lambda: filer.filed == 1, 10, lambda: f"filed {store.filed}")
    assert store.filed == [("a", "completed", True, None)]
