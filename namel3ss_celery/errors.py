"""The exceptions of namel3ss-celery: one root, a small tree beneath it."""

from __future__ import annotations

from collections.abc import Sequence


class Namel3ssCeleryError(Exception):
    """Root of every error this package raises on purpose."""


class SpecError(Namel3ssCeleryError, ValueError):
    """A spec is malformed; ``path`` names the field, e.g. ``parallel_blocks[0].strategy``."""

    def __init__(self, message: str, path: str = "", problems: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        self.problems: list[tuple[str, str]] = list(problems) or [(path, message)]
        super().__init__(f"{path}: {message}" if path else message)


class InvalidArgument(Namel3ssCeleryError, ValueError):
    """An argument of a call is not a value it takes; ``argument`` names it (e.g. ``timeout``)."""

    def __init__(self, message: str, argument: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class CompileError(Namel3ssCeleryError):
    """A valid spec that cannot be turned into canvas (unknown target, unsupported feature)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class NotSupportedYet(CompileError):
    """A spec field asks for behaviour this release does not implement."""


class RoutingError(Namel3ssCeleryError):
    """A pool, queue or route cannot be built as asked."""


class ScheduleError(Namel3ssCeleryError):
    """A trigger or schedule cannot be installed."""


class ConfigurationError(Namel3ssCeleryError):
    """The Celery app or the environment cannot run what was asked; ``setting`` names the culprit."""

    def __init__(self, message: str, setting: str = "") -> None:
        self.setting = setting
        super().__init__(message)


class UnknownRun(Namel3ssCeleryError, LookupError):
    """No run with this id is known to the coordination store (never existed, or expired)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"unknown run {run_id!r} (never dispatched here, or its record expired)")


class BrokerUnavailable(Namel3ssCeleryError, ConnectionError):
    """The broker could not be reached, so nothing was published; ``broker`` is its URL without the password."""

    def __init__(self, message: str, broker: str = "") -> None:
        self.broker = broker
        super().__init__(message)


class StoreUnavailable(Namel3ssCeleryError, ConnectionError):
    """The coordination store did not answer (after its own reconnects and retries); ``store`` names it."""

    def __init__(self, message: str, store: str = "") -> None:
        self.store = store
        super().__init__(message)


class WaitTimeout(Namel3ssCeleryError, TimeoutError):
    """Waiting for a run gave up; the run itself goes on."""

    def __init__(
        self, run_id: str, timeout: float, status: str, idle_queues: dict[str, list[str]] | None = None
    ) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.status = status
        self.idle_queues = dict(idle_queues or {})  # queue: what waits there ("node 'b'"), which nobody consumes
        why = "".join(
            f"; no worker consumes queue {queue!r}, where {' and '.join(waiting)} waits"
            for queue, waiting in self.idle_queues.items()
        )
        super().__init__(f"run {run_id} still {status} after waiting {timeout:g}s{why}")


class EventNotMatched(WaitTimeout):
    """The emitter of an event that ``sync`` triggers wait for gave up waiting for a worker to match it: its
    match task waits in the broker (no worker consumes it, or none has the time), and a worker that takes
    it later starts the runs, with nobody waiting for them. ``run_id`` is empty: no run is known yet."""

    def __init__(self, event_id: str, triggers: list[str], timeout: float) -> None:
        self.event_id = event_id
        self.triggers = list(triggers)
        self.run_id = ""
        self.timeout = timeout
        self.status = "not matched"
        self.idle_queues = {}
        names = " and ".join(repr(name) for name in self.triggers)
        Namel3ssCeleryError.__init__(
            self,
            f"no worker answered within {timeout:g}s with the run of sync trigger {names} for event {event_id}: "
            "its match task (n3.events.match) waits in the broker; is a worker consuming the default queue?",
        )


class StepCancelled(Namel3ssCeleryError):
    """Raised inside a step that was asked to stop."""


class StepTimeout(Namel3ssCeleryError, TimeoutError):
    """A step ran past its own ``timeout_seconds``."""


class StepLost(Namel3ssCeleryError):
    """A step's worker was lost (or its message redelivered) more times than its delivery contract allows."""


class StepResultError(Namel3ssCeleryError, TypeError):
    """A step returned something JSON cannot carry."""


class UnknownTarget(CompileError):
    """A step names a target that is neither registered nor an allowed ``module:function``."""


class DecodeError(Namel3ssCeleryError, ValueError):
    """A message or a stored record is not what this version reads; the message names what is wrong."""


class SchemaVersionError(DecodeError):
    """A message was written with a schema version this worker does not know."""


class RunFailed(Namel3ssCeleryError):
    """``raise_for_status()`` on a failed run; ``errors`` lists what failed."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message)


class RunTimedOut(RunFailed):
    """``raise_for_status()`` on a run that hit its deadline."""


class RunCancelled(RunFailed):
    """``raise_for_status()`` on a cancelled run."""


# --- the distributed task queue (namel3ss.runtime.distributed) ----------------------------------------


class UnknownBrokerType(ConfigurationError, ValueError):
    """A distributed queue was asked for a broker type other than redis, rabbitmq or memory."""

    def __init__(self, broker_type: object) -> None:
        self.broker_type = broker_type
        super().__init__(f"unknown broker type {broker_type!r}; use redis, rabbitmq or memory", "broker_type")


class BrokerNotConnected(Namel3ssCeleryError, RuntimeError):
    """A message broker was used before ``connect()`` (or after ``disconnect()``)."""


class UnknownTaskType(Namel3ssCeleryError, LookupError):
    """A worker has no handler for a distributed task's ``task_type`` (raised on the worker: the task fails)."""


class UnknownTask(Namel3ssCeleryError, LookupError, ValueError):
    """No distributed task with this id was submitted here, and the result backend knows none."""

    def __init__(self, task_id: str, queue_name: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"unknown task {task_id!r} on queue {queue_name!r} (not submitted here, or its result expired)"
        )


class UnknownWorker(Namel3ssCeleryError, LookupError, ValueError):
    """``start_worker`` named a worker that was never registered."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        super().__init__(f"worker {worker_id!r} is not registered: call register_worker({worker_id!r}, ...) first")


class TaskWaitTimeout(Namel3ssCeleryError, TimeoutError):
    """Waiting for a distributed task's result gave up; the task itself goes on."""

    def __init__(self, task_id: str, task_type: str, timeout: float, status: str, waiting_in: str = "") -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.status = status
        self.waiting_in = waiting_in  # the capability queue a queued task waits in, for a worker that consumes it
        why = f"; it waits in queue {waiting_in!r} for a worker with its required_capability" if waiting_in else ""
        super().__init__(f"task {task_id} ({task_type}) still {status} after waiting {timeout:g}s{why}")


class DistributedTaskFailed(Namel3ssCeleryError):
    """``raise_for_status()`` on a distributed task that failed or was cancelled."""


class TaskHandlerFailed(Namel3ssCeleryError):
    """A distributed task's handler failed on every attempt: ``error`` is its last error (``"ValueError: ..."``),
    ``retries`` the attempts after the first. Raised on the worker; the task is a Celery FAILURE."""

    def __init__(self, error: str, retries: int = 0) -> None:
        self.error = error
        self.retries = retries
        super().__init__(error, retries)  # both travel in the result backend

    def __str__(self) -> str:
        return self.error
