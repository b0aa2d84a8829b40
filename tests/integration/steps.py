"""Steps the integration tests run on real workers (listed in NAMEL3SS_CELERY_STEP_MODULES)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from celery import current_task

from namel3ss_celery import reducer, step


@step("echo")
def echo(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return step.get("value")


@step("async_double")
async def async_double(step: dict[str, Any], context: dict[str, Any]) -> int:
    await asyncio.sleep(0.01)
    return int(step["value"]) * 2


@step("fail")
def fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    raise ValueError(step.get("message", "step failed on purpose"))


@step("async_fail")
async def async_fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    await asyncio.sleep(0.01)
    raise KeyError("missing on purpose")


@step("context_value")
def context_value(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return context.get(step["key"])


@step("whoami")
def whoami(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    task = current_task._get_current_object()
    request = task.request
    return {
        "task_classes": [cls.__name__ for cls in type(task).__mro__],
        "task_name": task.name,
        "hostname": request.hostname,
        "queue": (request.delivery_info or {}).get("routing_key"),
        "pid": os.getpid(),
    }


@step("not_json")
def not_json(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return {"when": object()}


@step("sleep")
def sleep(step: dict[str, Any], context: dict[str, Any]) -> float:
    time.sleep(float(step["seconds"]))
    return float(step["seconds"])


@reducer("product")
def product(results: list[int]) -> int:
    out = 1
    for value in results:
        out *= value
    return out


def add_one(step: dict[str, Any], context: dict[str, Any]) -> int:
    """A plain module-level function: target ``tests.integration.steps:add_one``."""
    return int(step["value"]) + 1
