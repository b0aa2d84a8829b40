"""The Celery signals a step's outcome may come from when the step itself could not file it.

A worker process lost or killed at its hard time limit (``task_failure`` in the
worker's main process), a step revoked or expired (``task_revoked``), a step
task this worker does not know (``task_unknown``): each still files an outcome
for its step, so its block ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import NotRegistered, TimeLimitExceeded

from ..engine.conductor import Conductor
from ..engine.runner import StepOutcome
from ..plan.kinds import Join, Outcome
from ..plan.message import StepMessage
from ..registry import STEP_TASK_PREFIX
from .compat import fail_chord_part
from .step_task import StepHandler


def connect_step_signals(app: Any, conductor: Conductor, steps: StepHandler) -> list[Callable[..., None]]:
    """Connect the handlers of ``app``'s step tasks (each ignores every other app's tasks).

    Returns:
        The handlers, connected weakly: they stay connected while the caller keeps this list.
    """

    def ours(sender: Any) -> bool:
        return getattr(sender, "app", None) is app and str(getattr(sender, "name", "")).startswith(STEP_TASK_PREFIX)

    def on_process_init(**_: Any) -> None:
        steps.pool = "prefork"  # only prefork children send worker_process_init

    def on_task_failure(sender: Any = None, task_id: str = "", exception: Any = None, **kw: Any) -> None:
        # Sent by the worker's main process when a step's process was lost or hit its hard time limit:
        # the step never filed an outcome.
        if ours(sender) and isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
            args = kw.get("args") or ()
            reason = f"{type(exception).__name__}: {exception}"
            conductor.file_lost(args[0] if args else None, task_id, reason)

    def on_task_revoked(sender: Any = None, request: Any = None, **kw: Any) -> None:
        # Revoked by hand (Flower, control.revoke), or expired at a block deadline, before or while running.
        if ours(sender) and request is not None:
            args = getattr(request, "args", None) or ()
            payload = args[0] if args else None
            how = "expired" if kw.get("expired") else ("terminated" if kw.get("terminated") else "revoked")
            started: Outcome | None = Outcome.STOPPED if kw.get("terminated") else Outcome.NOT_STARTED
            reason = f"{how} before it finished"
            waited = waited_too_long(payload) if kw.get("expired") else None
            if waited is not None:
                started = None  # a failure, not a cancellation: no worker of its queue took it in time
                reason = f"waited longer than {waited} for a worker of its queue"
            conductor.file_lost(payload, str(request.id), reason, started)

    def on_task_unknown(sender: Any = None, name: str = "", id: str = "", message: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app and name.startswith(STEP_TASK_PREFIX) and message is not None:
            refuse_unknown(app, conductor, name, id, message)

    handlers: list[tuple[Any, Callable[..., None]]] = [
        (signals.worker_process_init, on_process_init),
        (signals.task_failure, on_task_failure),
        (signals.task_revoked, on_task_revoked),
        (signals.task_unknown, on_task_unknown),
    ]
    for signal, handler in handlers:
        signal.connect(handler)
    return [handler for _signal, handler in handlers]


def waited_too_long(payload: Any) -> str | None:
    """The wait an expired step message expired for (``"max_wait_seconds (1.0s)"``, or its task queue's
    ``message_retention``); ``None`` when it was its block's deadline."""
    message = StepMessage.routing(payload)
    if message is None or message.max_wait is None:
        return None
    if message.deadline is not None and time.time() >= message.deadline:
        return None
    return f"{message.max_wait_field} ({message.max_wait}s)"


def refuse_unknown(app: Any, conductor: Conductor, name: str, task_id: str, message: Any) -> None:
    """A worker got ``n3.step.<target>`` it has no task for: fail that step so its block still ends."""
    args, _kwargs, embed = message.decode()
    step = StepMessage.routing(args[0] if args else None)
    if step is None:
        return
    exc = NotRegistered(name)
    error = (
        f"this worker has no task {name!r}: target {name[len(STEP_TASK_PREFIX) :]!r} is not registered here "
        "(or its module is not in NAMEL3SS_CELERY_STEP_MODULES)"
    )
    conductor.follow_up(conductor.file(step, StepOutcome.failure(step.key, exc, task_id=task_id, error=error)))
    if step.join == Join.CHORD and embed.get("chord"):
        fail_chord_part(app, task_id, message.headers, embed, exc)
