"""Sticky keys: paths that need no broker."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from namel3ss_celery.plan.message import Sticky
from namel3ss_celery.worker.sticky import StickyKeys


def test_a_worker_without_its_direct_queue_runs_sticky_steps_and_warns_once_per_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_store() -> Any:
        raise AssertionError("a worker that keeps no keys never reads the store")

    keys = StickyKeys(app=None, store=no_store, ttl=60)
    task: Any = SimpleNamespace(request=SimpleNamespace(hostname="w@h", id="t"))
    with caplog.at_level(logging.WARNING, logger="namel3ss_celery"):
        for key in ("a", "b", "a"):
            assert keys.forwarded(task, Sticky("gpu", key)) is False
        assert keys.forwarded(task, Sticky("cpu", "a")) is False
    warnings = [r.getMessage() for r in caplog.records if "without keeping their keys" in r.getMessage()]
    assert len(warnings) == 2
    assert "pool gpu" in warnings[0] and "pool cpu" in warnings[1]
