"""What a Celery worker runs for a distributed queue: the task ``n3.queue.task`` and how it finds a handler.

A task of a ``DistributedTaskQueue`` is this one Celery task, published on the queue's name (or on
``<queue>.cap.<capability>``, runtime/capabilities.py), with the ``DistributedTask`` as its argument. The
worker hands it to a handler: the one that ``start_worker`` gave the worker in this process that took it,
else the handler registered for its ``task_type`` with ``@task_handler("type")`` (in a module of
``NAMEL3SS_CELERY_STEP_MODULES``), else a ``module:function`` of a listed module. A handler takes the
``DistributedTask`` (sync or ``async def``) and returns JSON data.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from celery import signals

from ..errors import ConfigurationError, StepTimeout, TaskHandlerFailed, UnknownTaskType
from .distributed_model import DistributedTask, TaskStatus, decode_task

QUEUE_TASK = "n3.queue.task"
RETRYING = "RETRYING"  # a state of our own: Celery's RETRY holds an exception, and means a new message

TaskHandler = Callable[[DistributedTask], Any]

_HANDLERS: dict[str, TaskHandler] = {}


def task_handler(task_type: str) -> Callable[[TaskHandler], TaskHandler]:
    """Register the handler workers run for distributed tasks of ``task_type``.

    Put it in a module listed in ``NAMEL3SS_CELERY_STEP_MODULES``, so that ``celery -A namel3ss_celery
    worker -Q <queue>`` imports it as it starts.

    Raises:
        ConfigurationError: another function is already registered for ``task_type``.
    """

    def decorate(function: TaskHandler) -> TaskHandler:
        existing = _HANDLERS.get(task_type)
        if existing is not None and existing is not function:
            raise ConfigurationError(f"task type {task_type!r} already has a handler: {existing!r}", "task_type")
        _HANDLERS[task_type] = function
        return function

    return decorate


def find_handler(
    task: DistributedTask, queue_name: str, own: TaskHandler | None, step_modules: Sequence[str]
) -> TaskHandler:
    """The handler for ``task`` on this worker: its ``own`` (``start_worker``'s), else as the module's docstring
    says.

    Raises:
        UnknownTaskType: none is known here (the message names the task type, the queue and what was tried).
    """
    found = own or _HANDLERS.get(task.task_type)
    if found is not None:
        return found
    module, _, name = task.task_type.partition(":")
    if name and module in step_modules:
        function = getattr(sys.modules.get(module), name, None)
        if callable(function):
            return function  # type: ignore[no-any-return]
    raise UnknownTaskType(
        f"no handler for task type {task.task_type!r} on queue {queue_name!r} here: register one with "
        f"@task_handler({task.task_type!r}) in a module of NAMEL3SS_CELERY_STEP_MODULES (listed: "
        f"{', '.join(step_modules) or 'none'}), name a module:function of one, or start_worker() with a handler"
    )


def run_handler(handler: TaskHandler, task: DistributedTask) -> Any:
    """Call ``handler(task)`` within the task's ``timeout_seconds``.

    Raises:
        StepTimeout: the handler ran past ``timeout_seconds`` (a sync one goes on in its thread, unheard).
    """
    limit = task.timeout_seconds
    if inspect.iscoroutinefunction(handler):

        async def bounded() -> Any:
            return await asyncio.wait_for(handler(task), limit)

        try:
            return asyncio.run(bounded())
        except asyncio.TimeoutError as exc:
            raise _timeout(task) from exc
    if limit is None:
        result = handler(task)
        return asyncio.run(result) if inspect.isawaitable(result) else result  # type: ignore[arg-type]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="n3-queue-task")
    try:
        return pool.submit(handler, task).result(timeout=limit)
    except FutureTimeout as exc:
        raise _timeout(task) from exc
    finally:
        pool.shutdown(wait=False)


def _timeout(task: DistributedTask) -> StepTimeout:
    return StepTimeout(
        f"task {task.task_id} ({task.task_type}) ran past its timeout_seconds ({task.timeout_seconds:g}s)"
    )


def attempt(celery_task: Any, handler: TaskHandler, task: DistributedTask) -> Any:
    """Run the handler, again after a failure up to ``task.max_retries`` times (in this worker: a retry
    published as a new message could end before this attempt records its RETRY state, which would then
    overwrite the task's end). A timeout is not retried.

    Raises:
        StepTimeout: an attempt ran past ``timeout_seconds``.
        TaskHandlerFailed: the last attempt failed (its error, and the retries made).
    """
    while True:
        try:
            return run_handler(handler, task)
        except StepTimeout:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if task.retry_count >= task.max_retries:
                raise TaskHandlerFailed(error, task.retry_count) from exc
            task.retry_count += 1
            celery_task.update_state(state=RETRYING, meta={"retries": task.retry_count, "error": error})


class Receipts:
    """Which worker of ``app`` in this process received each task: Celery's threads pool tells a task the host it
    runs on, not the worker (``request.hostname``), and several in-process workers may serve one queue.

    Kept from Celery's ``task_received`` signal (sent by the worker's consumer before the task runs); each
    entry is taken once, by the task it names.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._by_task: dict[str, str] = {}
        self._lock = threading.Lock()
        signals.task_received.connect(self._received)

    def _received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is self.app and request is not None:
            with self._lock:
                self._by_task[str(request.id)] = str(sender.hostname)

    def take(self, task_id: str) -> str | None:
        """The name (``name@host``) of the worker here that received ``task_id``, once; None when none did."""
        with self._lock:
            return self._by_task.pop(task_id, None)


def register_queue_task(
    app: Any, local: Mapping[str, TaskHandler], step_modules: Sequence[str] = (), receipts: Receipts | None = None
) -> Any:
    """Register ``n3.queue.task`` on ``app``: it runs a distributed task's handler on the worker.

    Args:
        app: the Celery app whose workers serve distributed queues.
        local: handlers by worker hostname (``name@host``), of workers started in this process
            (``start_worker``).
        step_modules: the modules whose ``module:function`` may name a handler.
        receipts: which in-process worker received each task (its name is the task's ``worker_id``).
    """

    def run(self: Any, data: dict[str, Any]) -> dict[str, Any]:
        task, queue_name = decode_task(data)
        received_by = receipts.take(str(self.request.id)) if receipts is not None else None
        task.worker_id = received_by or str(self.request.hostname or "")
        task.started_at = time.time()
        task.status = TaskStatus.RUNNING
        self.update_state(state="STARTED", meta={"worker_id": task.worker_id, "started_at": task.started_at})
        handler = find_handler(task, queue_name, local.get(task.worker_id), step_modules)
        result = attempt(self, handler, task)
        return {
            "result": result,
            "worker_id": task.worker_id,
            "started_at": task.started_at,
            "completed_at": time.time(),
            "retries": task.retry_count,
        }

    return app.task(name=QUEUE_TASK, bind=True, shared=False, track_started=True)(run)
