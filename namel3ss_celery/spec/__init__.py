"""The Namel3ss IR as pydantic models, and their loaders."""

from .enums import (
    DistributionPolicy,
    ExecutionMode,
    FailureMode,
    ParallelStrategy,
    QueueType,
    Reliability,
    RetryBackoff,
    ScalingMetric,
)
from .infra import (
    DistributedExecutionSpec,
    EventHandlerSpec,
    EventTriggerSpec,
    TaskQueueSpec,
    WorkerPoolSpec,
)
from .load import load_any, load_model, load_program
from .models import ParallelBlockSpec, StepSpec, step_key
from .program import ProgramSpec, WorkflowNodeSpec, WorkflowSpec

__all__ = [
    "DistributedExecutionSpec",
    "DistributionPolicy",
    "EventHandlerSpec",
    "EventTriggerSpec",
    "ExecutionMode",
    "FailureMode",
    "ParallelBlockSpec",
    "ParallelStrategy",
    "ProgramSpec",
    "QueueType",
    "Reliability",
    "RetryBackoff",
    "ScalingMetric",
    "StepSpec",
    "TaskQueueSpec",
    "WorkerPoolSpec",
    "WorkflowNodeSpec",
    "WorkflowSpec",
    "load_any",
    "load_model",
    "load_program",
    "step_key",
]
