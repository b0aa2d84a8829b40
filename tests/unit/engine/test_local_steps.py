"""Steps run in this process through the engine: a sync step past its hard limit fails, and nothing waits for it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.engine import local_steps
from namel3ss_celery.local import LocalExecutor
from namel3ss_celery.registry import Registry
from namel3ss_celery.spec import load_any

RELEASE = threading.Event()
ENDED = threading.Event()


def stubborn(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Never asks whether it should stop; only the test lets it end."""
    RELEASE.wait(30)
    ENDED.set()
    return "late"


def test_a_sync_step_past_its_hard_limit_fails_and_its_block_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_steps, "HARD_LIMIT_GRACE", 0.2)
    registry = Registry()
    registry.add_step("stubborn", stubborn)
    block = {"name": "b", "strategy": "collect", "steps": [{"name": "s", "target": "stubborn", "timeout_seconds": 0.1}]}
    try:
        result = LocalExecutor(registry).run_sync(make_plan(load_any(block)))
        assert not ENDED.is_set()  # the run did not wait for the step, which still runs in its thread
        entry = result.final_result["s"]
        assert entry["status"] == "failed"
        assert "StepTimeout" in entry["error"] and "hard limit" in entry["error"]
    finally:
        RELEASE.set()
