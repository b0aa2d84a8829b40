"""Runs under ``task_always_eager`` (a user's test suite): in this process, as Celery runs eager tasks.

The local executor runs the plan; the run is then recorded, already ended, in the store the app reads
eager runs from, so ``n3.run(id)`` and the handle read it as any other.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .engine.ports import CoordinationStore
from .engine.runner import run_coroutine
from .local import LocalExecutor
from .plan import fields
from .plan.model import Plan
from .registry import Registry
from .results import RunStatus


def run_eagerly(
    registry: Registry,
    store: CoordinationStore,
    plan: Plan,
    context: dict[str, Any],
    run_id: str,
    step_modules: tuple[str, ...],
    ttl: int,
) -> None:
    """Run ``plan`` here and record it, ended, as run ``run_id`` (kept ``ttl`` seconds)."""
    executor = LocalExecutor(registry, step_modules=step_modules, ttl=ttl)
    result = run_coroutine(executor.run(plan, context))
    record = {
        fields.KIND: plan.kind,
        fields.NAME: plan.name,
        fields.STATUS: str(RunStatus.RUNNING),
        fields.CREATED: repr(time.time()),
    }
    store.create_run(run_id, record, ttl)
    store.finish(run_id, {fields.STATUS: str(result.overall_status), fields.RESULT: json.dumps(result.to_dict())}, ttl)
