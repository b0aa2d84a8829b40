"""The step runner: call a step function, time it, check its result is JSON, file its envelope."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ..errors import SchemaVersionError, StepCancelled, StepResultError, StepTimeout, UnknownTarget
from ..registry import StepDef

SCHEMA_VERSION = 1

_cancel_check: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "namel3ss_celery_cancel_check", default=None
)


_step_ids: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar(
    "namel3ss_celery_step_ids", default=None
)


def install_log_ids() -> None:
    """Make every log record carry ``n3_run``, ``n3_block`` and ``n3_step`` (``None`` outside a step).

    Wraps the logging record factory once per process, so formats such as
    ``%(n3_run)s %(n3_step)s %(message)s`` work with any handler.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "namel3ss_ids", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.n3_run, record.n3_block, record.n3_step = _step_ids.get() or (None, None, None)
        return record

    make_record.namel3ss_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


def cancelled() -> bool:
    """True when the step running in this context has been asked to stop.

    Long sync steps call it between units of work and return or raise
    ``StepCancelled``. Outside a step it is always False.
    """
    check = _cancel_check.get()
    return bool(check and check())


@dataclass
class StepOutcome:
    """What one call of a step function produced."""

    key: str
    status: str  # "completed" | "failed" | "cancelled"
    result: Any
    error: str | None
    exception: BaseException | None
    start: float
    end: float
    worker: str
    task_id: str
    outcome: str | None = None  # for race losers and stopped steps: not_started, stopped, ran_to_end, won
    executed_on: str | None = None  # "local" for a step its publisher ran itself (fallback_to_local)

    def envelope(self) -> str:
        """The JSON filed in the coordination store for settle to read."""
        return json.dumps(
            {
                "key": self.key,
                "status": self.status,
                "result": self.result,
                "error": self.error,
                "start": self.start,
                "end": self.end,
                "worker": self.worker,
                "task_id": self.task_id,
                "outcome": self.outcome,
                **({"executed_on": self.executed_on} if self.executed_on else {}),
            }
        )


def check_payload(payload: Any, definition: StepDef) -> dict[str, Any]:
    """Refuse a message of an unknown schema version or one addressed to another target."""
    if not isinstance(payload, dict):
        raise SchemaVersionError(f"a step message carries a mapping, not {type(payload).__name__}")
    version = payload.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"step message schema version {version!r} is not known to this worker (it knows {SCHEMA_VERSION})"
        )
    step = payload.get("step")
    target = step.get("target") if isinstance(step, dict) else None
    if target != definition.target:
        raise UnknownTarget(f"message for target {target!r} reached the task of {definition.target!r}")
    return payload


def call_step(
    definition: StepDef,
    payload: dict[str, Any],
    worker: str,
    task_id: str,
    should_stop: Callable[[], bool] | None = None,
) -> StepOutcome:
    """Run the step function on ``(step, context)``; every exception becomes a failed outcome.

    ``should_stop`` is asked (at most every ``CHECK_INTERVAL``) by ``cancelled()``
    in sync steps, and by a watcher that cancels async steps.
    """
    start = time.time()
    limit = payload["step"].get("timeout_seconds")
    overdue = (lambda: time.time() >= start + float(limit)) if limit else None
    stops = [f for f in (should_stop, overdue) if f is not None]
    check = throttled(lambda: any(f() for f in stops)) if stops else None
    token = _cancel_check.set(check)
    ids = _step_ids.set((str(payload.get("run")), str(payload.get("node")), str(payload["key"])))
    try:
        value = definition.function(dict(payload["step"]), dict(payload.get("context") or {}))
        if asyncio.iscoroutine(value):
            value = run_coroutine(_watched(value, check))
        if overdue is not None and overdue():  # a step that never checks ran past its timeout: it failed
            raise StepTimeout(f"step {payload['key']!r} ran past its timeout_seconds ({limit}s)")
        result = to_json_data(value, f"step {payload['key']!r} ({definition.target})")
    except (StepCancelled, SoftTimeLimitExceeded) as exc:
        end = time.time()
        timed_out = overdue is not None and overdue() and not (should_stop and should_stop())
        if timed_out or isinstance(exc, SoftTimeLimitExceeded):  # Celery's soft limit is the step's own
            late = StepTimeout(f"step {payload['key']!r} ran past its timeout_seconds ({limit}s)")
            return StepOutcome(payload["key"], "failed", None, describe(late), late, start, end, worker, task_id)
        return StepOutcome(
            payload["key"], "cancelled", None, describe(exc), exc, start, end, worker, task_id, "stopped"
        )
    except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
        return StepOutcome(payload["key"], "failed", None, describe(exc), exc, start, time.time(), worker, task_id)
    finally:
        _cancel_check.reset(token)
        _step_ids.reset(ids)
    return StepOutcome(payload["key"], "completed", result, None, None, start, time.time(), worker, task_id)


CHECK_INTERVAL = 0.05


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async step to its end from sync code; in a thread of its own when this one has a loop running
    (an eager dispatch from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop_running = False
    else:
        loop_running = True
    if not loop_running:
        return asyncio.run(coro)  # outside the except: a step's own error carries no unrelated context
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="namel3ss-step") as pool:
        return pool.submit(asyncio.run, coro).result()


def throttled(should_stop: Callable[[], bool]) -> Callable[[], bool]:
    """``should_stop`` asked at most every ``CHECK_INTERVAL`` seconds; once True, always True."""
    state = {"at": 0.0, "stop": False}

    def check() -> bool:
        now = time.monotonic()
        if not state["stop"] and now - state["at"] >= CHECK_INTERVAL:
            state["at"] = now
            state["stop"] = bool(should_stop())
        return bool(state["stop"])

    return check


async def _watched(coro: Coroutine[Any, Any, Any], check: Callable[[], bool] | None) -> Any:
    """Await ``coro``; cancel it and raise ``StepCancelled`` when ``check`` says stop."""
    task = asyncio.ensure_future(coro)
    if check is None:
        return await task
    while True:
        done, _ = await asyncio.wait({task}, timeout=CHECK_INTERVAL)
        if done:
            return task.result()
        if check():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            raise StepCancelled("stopped: its block no longer needs it")


def describe(exc: BaseException) -> str:
    """``ValueError: bad input`` — the error string results carry."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_json_data(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back; anything JSON cannot carry raises ``StepResultError``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        if isinstance(value, float) and not math.isfinite(value):
            raise StepResultError(f"{what} returned {value!r}, which JSON cannot carry") from None
        raise StepResultError(f"{what} returned a value JSON cannot carry: {exc}") from None
