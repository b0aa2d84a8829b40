"""The pytest plugin as a user's own test suite uses it: ``pytest_plugins = ["namel3ss_celery.testing"]``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery, StepCancelled, cancelled, step

pytest_plugins = ["namel3ss_celery.testing"]


@pytest.fixture()
def celery_worker_pool() -> str:
    return "threads"  # a race needs steps running at once (Celery's test worker is solo by default)


@pytest.fixture()
def celery_worker_parameters() -> dict[str, Any]:
    return {"concurrency": 4}


@step("plugin_double")
def double(step: dict[str, Any], context: dict[str, Any]) -> int:
    return int(step["n"]) * 2


@step("plugin_slow")
def slow(step: dict[str, Any], context: dict[str, Any]) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if cancelled():
            raise StepCancelled("lost")
        time.sleep(0.01)
    return "slow"


def test_a_block_runs_on_the_test_worker(n3: Namel3ssCelery, n3_worker: Any) -> None:
    run = n3.dispatch({"name": "doubles", "steps": [{"target": "plugin_double", "n": n} for n in range(3)]})
    result = run.get(timeout=20)
    assert result.overall_status == "completed"
    assert result.final_result == {"step_0": 0, "step_1": 2, "step_2": 4}
    assert n3_worker.hostname  # a real worker (Celery's test worker thread), not eager mode


def test_a_race_stops_its_loser_on_the_test_worker(n3: Namel3ssCelery, n3_worker: Any) -> None:
    block = {
        "name": "race",
        "strategy": "race",
        "steps": [{"name": "slow", "target": "plugin_slow"}, {"name": "fast", "target": "plugin_double", "n": 1}],
    }
    result = n3.dispatch(block).get(timeout=20)
    assert result.overall_status == "completed" and result.final_result == 2
