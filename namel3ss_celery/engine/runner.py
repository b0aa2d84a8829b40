"""The step runner: call a step function, time it, check its result is JSON, say what happened."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ..errors import StepCancelled, StepTimeout
from ..plan.envelope import Envelope
from ..plan.fields import STEP_VALUE
from ..plan.kinds import Outcome
from ..plan.message import StepMessage
from ..registry import StepDef, StepFunction
from ..results import TaskStatus
from .values import describe, to_json_data

CHECK_INTERVAL = 0.05

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
    """What one call of a step function produced (filed as its ``Envelope``)."""

    key: str
    status: TaskStatus  # completed, failed or cancelled
    start: float
    end: float
    worker: str = ""
    task_id: str = ""
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None
    outcome: Outcome | None = None  # for race losers and stopped steps
    executed_on: str | None = None  # "local" for a step its publisher ran itself (fallback_to_local)
    attempts: int = 1  # tries of the step this outcome ends: 1, or more after retries
    dead_letter: str | None = None  # the dead-letter queue its message goes to, failing for good

    @classmethod
    def failure(
        cls, key: str, exc: BaseException, *, worker: str = "", task_id: str = "", error: str | None = None
    ) -> StepOutcome:
        """A step that failed without running to its end: refused, lost, unknown to its worker."""
        now = time.time()
        return cls(key, TaskStatus.FAILED, now, now, worker, task_id, error=error or describe(exc), exception=exc)

    @classmethod
    def stopped(
        cls,
        key: str,
        reason: str,
        outcome: Outcome,
        *,
        worker: str = "",
        task_id: str = "",
        start: float | None = None,
    ) -> StepOutcome:
        """A step that was stopped (``outcome`` stopped) or never began (``not_started``)."""
        now = time.time()
        begun = now if start is None else start
        return cls(key, TaskStatus.CANCELLED, begun, now, worker, task_id, error=reason, outcome=outcome)

    def envelope(self) -> str:
        """The JSON filed in the coordination store for settle to read."""
        return Envelope(
            key=self.key,
            status=self.status,
            result=self.result,
            error=self.error,
            start=self.start,
            end=self.end,
            worker=self.worker,
            task_id=self.task_id,
            outcome=self.outcome,
            executed_on=self.executed_on,
            attempts=self.attempts,
            dead_letter=self.dead_letter,
        ).encode()


def in_task_of_its_own(should_stop: Callable[[], bool]) -> Callable[[tuple[str, str, str]], None]:
    """For code in an asyncio task of its own that runs steps one after another: from now on ``cancelled()``
    asks ``should_stop`` there; the function returned names the step that runs next in its log records (run,
    block, step). Nothing is reset: the task's context ends with it."""
    _cancel_check.set(should_stop)
    return _step_ids.set  # type: ignore[return-value]


def call_step(
    definition: StepDef,
    message: StepMessage,
    worker: str,
    task_id: str,
    should_stop: Callable[[], bool] | None = None,
) -> StepOutcome:
    """Run the step function on ``(step, context)``; every exception becomes a failed outcome.

    ``should_stop`` is asked (at most every ``CHECK_INTERVAL``) by ``cancelled()``
    in sync steps, and by a watcher that cancels async steps.
    """
    start = time.time()
    limit = message.timeout_seconds
    overdue = (lambda: time.time() >= start + float(limit)) if limit else None
    stops = [f for f in (should_stop, overdue) if f is not None]
    check = throttled(lambda: any(f() for f in stops)) if stops else None
    key = message.key

    def ended(status: TaskStatus, **fields: Any) -> StepOutcome:
        return StepOutcome(key, status, start, time.time(), worker, task_id, **fields)

    token = _cancel_check.set(check)
    ids = _step_ids.set((message.run, message.node, key))
    try:
        value = definition.function(step_argument(message), dict(message.context))
        if asyncio.iscoroutine(value):
            value = run_coroutine(watched(value, check))
        if overdue is not None and overdue():  # a step that never checks ran past its timeout: it failed
            raise StepTimeout(f"step {key!r} ran past its timeout_seconds ({limit}s)")
        result = to_json_data(value, f"step {key!r} ({definition.target})")
    except (StepCancelled, SoftTimeLimitExceeded) as exc:
        timed_out = overdue is not None and overdue() and not (should_stop and should_stop())
        if timed_out or isinstance(exc, SoftTimeLimitExceeded):  # Celery's soft limit is the step's own
            late = StepTimeout(f"step {key!r} ran past its timeout_seconds ({limit}s)")
            return ended(TaskStatus.FAILED, error=describe(late), exception=late)
        return ended(TaskStatus.CANCELLED, error=describe(exc), exception=exc, outcome=Outcome.STOPPED)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
        return ended(TaskStatus.FAILED, error=describe(exc), exception=exc)
    finally:
        _cancel_check.reset(token)
        _step_ids.reset(ids)
    return ended(TaskStatus.COMPLETED, result=result)


async def call_async_step(
    definition: StepDef, message: StepMessage, worker: str, should_stop: Callable[[], bool]
) -> StepOutcome:
    """``call_step`` for an ``async def`` step, awaited on the running event loop (the local executor)."""
    check = throttled(should_stop)
    token, start = _cancel_check.set(check), time.time()
    try:
        value = await watched(definition.function(step_argument(message), dict(message.context)), check)
        replay = _returning(value)
    except Exception as exc:  # noqa: BLE001 - handed to call_step, which makes it the step's failure
        replay = _raising(exc)
    finally:
        _cancel_check.reset(token)
    outcome = call_step(StepDef(definition.target, replay), message, worker, "")
    outcome.start = start
    return outcome


def _returning(value: Any) -> StepFunction:
    return lambda step, context: value


def _raising(exc: Exception) -> StepFunction:
    def replay(step: dict[str, Any], context: dict[str, Any]) -> Any:
        raise exc

    return replay


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


async def watched(coro: Coroutine[Any, Any, Any], check: Callable[[], bool] | None) -> Any:
    """Await ``coro`` in this task; cancel it and raise ``StepCancelled`` when ``check`` says stop.

    ``check`` is asked every ``CHECK_INTERVAL`` by a timer on the loop (no task of its own: a cheap step
    costs one timer), which cancels this task when it says stop; that cancellation, and only that one,
    becomes ``StepCancelled`` here.
    """
    if check is None:
        return await coro
    task = asyncio.current_task()
    if task is None:  # not in a task (never so from the engine): nothing to cancel, nothing to watch
        return await coro
    loop = asyncio.get_running_loop()
    stopping = False
    timer: asyncio.TimerHandle | None = None

    def look() -> None:
        nonlocal timer, stopping
        if check():
            stopping = True
            task.cancel()
        else:
            timer = loop.call_later(CHECK_INTERVAL, look)

    timer = loop.call_later(CHECK_INTERVAL, look)
    try:
        value = await coro
    except asyncio.CancelledError:
        if not stopping:
            raise  # cancelled from outside (the run ended, a hard limit): not a stop of ours
    finally:
        timer.cancel()
    if stopping:  # asked to stop: whatever the step did with the cancellation, it was stopped
        _uncancel(task)
        raise StepCancelled("stopped: its block no longer needs it")
    return value


def _uncancel(task: asyncio.Task[Any]) -> None:
    """Take back the cancellation ``watched`` asked for, so code around the step (``asyncio.timeout``) does
    not take it for its own (Python 3.11 and later count them)."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def step_argument(message: StepMessage) -> Any:
    """What a step function receives as its step: a copy of the step's keys, or, for a step the Namel3ss
    runtime API sent as a value of its own (``fields.STEP_VALUE``), that value as it was given."""
    step = message.step
    return step[STEP_VALUE] if STEP_VALUE in step else dict(step)


def current_step() -> tuple[str, str, str] | None:
    """The run, block and step of the step running in this context (``None`` outside a step)."""
    return _step_ids.get()
