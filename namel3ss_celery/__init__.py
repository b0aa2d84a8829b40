"""namel3ss-celery: run Namel3ss parallel blocks, workflows and programs on Celery."""

from .engine.runner import cancelled
from .errors import (
    BrokerUnavailable,
    CompileError,
    ConfigurationError,
    EventNotMatched,
    Namel3ssCeleryError,
    NotSupportedYet,
    RoutingError,
    RunCancelled,
    RunFailed,
    RunTimedOut,
    ScheduleError,
    SpecError,
    StepCancelled,
    StepLost,
    StepResultError,
    UnknownRun,
    UnknownTarget,
    WaitTimeout,
)
from .extension import Namel3ssCelery, install
from .registry import reducer, step
from .results import ParallelExecutionResult, ParallelTaskResult, RunStatus, TaskStatus, WorkflowResult
from .runs import RunHandle
from .settings import Settings
from .spec import load_program

__version__ = "0.1.0"

__all__ = [
    # install and run
    "Namel3ssCelery",
    "install",
    "RunHandle",
    "Settings",
    "load_program",
    # steps
    "step",
    "reducer",
    "cancelled",
    # results
    "ParallelExecutionResult",
    "ParallelTaskResult",
    "WorkflowResult",
    "RunStatus",
    "TaskStatus",
    # errors
    "Namel3ssCeleryError",
    "SpecError",
    "BrokerUnavailable",
    "CompileError",
    "NotSupportedYet",
    "UnknownTarget",
    "RoutingError",
    "ScheduleError",
    "ConfigurationError",
    "UnknownRun",
    "WaitTimeout",
    "EventNotMatched",
    "StepCancelled",
    "StepLost",
    "StepResultError",
    "RunFailed",
    "RunTimedOut",
    "RunCancelled",
]
