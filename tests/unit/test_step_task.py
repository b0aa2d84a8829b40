"""StepHandler paths that need no broker."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from namel3ss_celery.step_task import StepHandler


def test_a_worker_without_its_direct_queue_runs_sticky_steps_and_warns_once_per_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = StepHandler(conductor=None)  # type: ignore[arg-type] - not reached on this path
    task: Any = SimpleNamespace(request=SimpleNamespace(hostname="w@h", id="t"))
    with caplog.at_level(logging.WARNING, logger="namel3ss_celery"):
        for key in ("a", "b", "a"):
            assert handler._forwarded(task, {"pool": "gpu", "key": key}) is False
        assert handler._forwarded(task, {"pool": "cpu", "key": "a"}) is False
    warnings = [r.getMessage() for r in caplog.records if "without keeping their keys" in r.getMessage()]
    assert len(warnings) == 2
    assert "pool gpu" in warnings[0] and "pool cpu" in warnings[1]
