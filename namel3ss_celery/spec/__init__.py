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
from .models import FanOutSpec, ParallelBlockSpec, StepSpec, expand_fan_out, step_key
from .program import ProgramSpec, WorkflowNodeSpec, WorkflowSpec

__all__ = [
    "DistributedExecutionSpec",
    "DistributionPolicy",
    "EventHandlerSpec",
    "EventTriggerSpec",
    "ExecutionMode",
    "FanOutSpec",
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
    "expand_fan_out",
    "load_any",
    "load_model",
    "load_program",
    "step_key",
]
