"""The decision rule, as a table: every strategy, outcome order and flag."""

from __future__ import annotations

import pytest

from namel3ss_celery.engine.decide import Decision, decide_after
from namel3ss_celery.results import RunStatus, TaskStatus
from namel3ss_celery.spec import ParallelStrategy

OK, FAIL, STOP = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED
ALL, COLLECT, MAP, RACE, ANY = (
    ParallelStrategy.ALL,
    ParallelStrategy.COLLECT,
    ParallelStrategy.MAP_REDUCE,
    ParallelStrategy.RACE,
    ParallelStrategy.ANY_SUCCESS,
)


def first_decision(
    strategy: ParallelStrategy, fail_fast: bool, order: list[tuple[int, TaskStatus]]
) -> tuple[int, Decision] | None:
    """Feed outcomes in the order steps report them; the first decision wins (as the store's claim does).

    Returns how many outcomes were filed when it was made, and the decision."""
    total = len(order)
    for filed, (index, status) in enumerate(order, start=1):
        decision = decide_after(
            strategy, fail_fast=fail_fast, total=total, filed=filed, index=index, key=f"s{index}", status=status
        )
        if decision is not None:
            return filed, decision
    return None


CASES = [
    # strategy, fail_fast, (index, status) in reporting order, expected: (filed when decided, status, winner) or None
    (ALL, False, [(0, OK), (1, OK), (2, OK)], None),
    (ALL, False, [(0, FAIL), (1, OK), (2, OK)], None),  # no fail_fast: the join settles it, failed
    (ALL, True, [(0, OK), (1, OK), (2, OK)], None),
    (ALL, True, [(1, OK), (0, FAIL), (2, OK)], (2, RunStatus.FAILED, None)),
    (ALL, True, [(2, STOP), (0, OK), (1, OK)], (1, RunStatus.FAILED, None)),  # stopped is not completed
    (MAP, True, [(0, OK), (1, FAIL)], (2, RunStatus.FAILED, None)),
    (MAP, False, [(0, FAIL), (1, FAIL)], None),
    (COLLECT, True, [(0, FAIL), (1, FAIL), (2, OK)], None),  # collect never ends early
    (COLLECT, False, [(0, FAIL), (1, OK)], None),
    (RACE, False, [(2, OK), (0, OK), (1, FAIL)], (1, RunStatus.COMPLETED, 2)),
    (RACE, True, [(1, FAIL), (0, OK)], (1, RunStatus.FAILED, 1)),  # the first to finish decides, failed or not
    (RACE, False, [(0, STOP), (1, OK)], (1, RunStatus.FAILED, 0)),
    (ANY, False, [(0, FAIL), (2, OK), (1, OK)], (2, RunStatus.COMPLETED, 2)),
    (ANY, True, [(0, FAIL), (1, FAIL), (2, OK)], (3, RunStatus.COMPLETED, 2)),  # fail_fast means nothing here
    (ANY, False, [(1, FAIL), (0, FAIL), (2, FAIL)], (3, RunStatus.FAILED, None)),
    (ANY, False, [(0, OK)], (1, RunStatus.COMPLETED, 0)),
]


@pytest.mark.parametrize(("strategy", "fail_fast", "order", "expected"), CASES)
def test_the_first_decision(
    strategy: ParallelStrategy,
    fail_fast: bool,
    order: list[tuple[int, TaskStatus]],
    expected: tuple[int, RunStatus, int | None] | None,
) -> None:
    made = first_decision(strategy, fail_fast, order)
    if expected is None:
        assert made is None
        return
    assert made is not None
    filed, decision = made
    assert (filed, decision.status, decision.winner) == expected


@pytest.mark.parametrize(
    ("strategy", "status", "reason"),
    [
        (RACE, OK, "step 's3' finished first"),
        (ANY, OK, "step 's3' succeeded first"),
        (ALL, FAIL, "step 's3' failed (fail_fast)"),
    ],
)
def test_a_decision_says_which_step_made_it(strategy: ParallelStrategy, status: TaskStatus, reason: str) -> None:
    decision = decide_after(strategy, fail_fast=True, total=5, filed=1, index=3, key="s3", status=status)
    assert decision is not None and decision.reason == reason


def test_a_decision_survives_its_json() -> None:
    decision = Decision(RunStatus.TIMEOUT, None, "the block's deadline (timeout_seconds) passed")
    assert Decision.from_json(decision.to_json()) == decision
