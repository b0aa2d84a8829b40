"""Handlers of the distributed queue tests, known to workers through NAMEL3SS_CELERY_STEP_MODULES."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from namel3ss_celery.runtime import DistributedTask, task_handler


@task_handler("n3test.double")
async def double(task: DistributedTask) -> dict[str, Any]:
    """Doubles ``payload["x"]``; fails when asked (``fail``); takes ``seconds`` first when given."""
    await asyncio.sleep(float(task.payload.get("seconds", 0)))
    if task.payload.get("fail"):
        raise ValueError(f"cannot double {task.payload['x']}")
    return {"double": task.payload["x"] * 2, "pid": os.getpid()}


def triple(task: DistributedTask) -> int:
    """A sync handler named by ``module:function``."""
    return int(task.payload["x"]) * 3


async def serve(task: DistributedTask) -> Any:
    """A ``start_worker`` handler: it gets every task of its queue, and picks by task type."""
    if task.task_type == "n3test.double":
        return await double(task)
    if task.task_type == f"{__name__}:triple":
        return triple(task)
    raise LookupError(f"no handler for task type {task.task_type!r}")
