"""IR models for where and how steps run: pools, queues, distribution, events."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from .enums import (
    DistributionPolicy,
    ExecutionMode,
    FailureMode,
    QueueType,
    Reliability,
    RetryBackoff,
    ScalingMetric,
)
from .models import Seconds, Spec, field_error


class WorkerPoolSpec(Spec):
    """A pool of workers, which becomes a Celery queue and a worker command line."""

    name: str = Field(min_length=1)
    queue_name: str = Field(min_length=1)
    description: str | None = None
    min_workers: int = Field(default=1, ge=0)
    max_workers: int = Field(default=10, ge=1)
    auto_scaling: bool = True
    scaling_metric: ScalingMetric = ScalingMetric.QUEUE_DEPTH
    target_value: float = 5.0
    scale_up_threshold: float = 10.0
    scale_down_threshold: float = 2.0
    capabilities: list[str] = Field(default_factory=list)
    permission_level: str = "read_only"
    allowed_tools: list[str] = Field(default_factory=list)
    allowed_agents: list[str] = Field(default_factory=list)
    max_memory_mb: int | None = Field(default=None, ge=1)
    max_cpu_cores: float | None = Field(default=None, gt=0)
    timeout_seconds: Seconds | None = Field(default=None, gt=0)
    worker_config: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _min_within_max(self) -> WorkerPoolSpec:
        if self.min_workers > self.max_workers:
            raise field_error(
                "min_workers",
                f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers}); "
                "a pool runs from min_workers up to max_workers",
            )
        return self


class TaskQueueSpec(Spec):
    """The delivery contract of a queue: reliability, retries, dead letters, limits."""

    name: str = Field(min_length=1)
    queue_type: QueueType = QueueType.REDIS_STREAMS
    description: str | None = None
    reliability: Reliability = Reliability.AT_LEAST_ONCE
    max_retries: int = Field(default=3, ge=0)
    retry_backoff: RetryBackoff = RetryBackoff.EXPONENTIAL
    initial_retry_delay: Seconds = Field(default=1.0, ge=0)
    max_retry_delay: Seconds = Field(default=60.0, ge=0)
    visibility_timeout: Seconds = Field(default=300.0, gt=0)
    message_retention: Seconds = Field(default=86400.0, gt=0)
    max_message_size: int = Field(default=1048576, ge=1)
    dead_letter_queue: str | None = None
    max_dead_letter_retries: int = Field(default=3, ge=0)
    redis_config: dict[str, Any] = Field(default_factory=dict)
    rabbitmq_config: dict[str, Any] = Field(default_factory=dict)
    external_config: dict[str, Any] = Field(default_factory=dict)
    enable_metrics: bool = True
    metric_tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DistributedExecutionSpec(Spec):
    """How a step reaches a pool. ``fallback_to_local`` defaults to ``False`` here (the IR says True)."""

    worker_pool: str = Field(min_length=1)
    queue_name: str | None = None
    distribution_policy: DistributionPolicy = DistributionPolicy.ROUND_ROBIN
    locality_preference: str | None = None
    worker_affinity: str | None = None
    avoid_workers: list[str] = Field(default_factory=list)
    failure_mode: FailureMode = FailureMode.RETRY_REMOTE
    max_wait_seconds: Seconds | None = Field(default=None, gt=0)
    fallback_to_local: bool = False
    required_memory_mb: int | None = Field(default=None, ge=1)
    required_cpu_cores: float | None = Field(default=None, gt=0)
    required_capabilities: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventTriggerSpec(Spec):
    """An event (or schedule) that starts a workflow or block."""

    name: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    trigger_target: str = Field(min_length=1)
    description: str | None = None
    source_config: dict[str, Any] = Field(default_factory=dict)
    filter_expression: str | None = None
    filter_fields: dict[str, Any] = Field(default_factory=dict)
    trigger_delay: Seconds | None = Field(default=None, ge=0)
    deduplicate_window: Seconds | None = Field(default=None, gt=0)
    context_mapping: dict[str, str] = Field(default_factory=dict)
    execution_mode: ExecutionMode = ExecutionMode.ASYNC
    max_triggers_per_minute: int | None = Field(default=None, ge=1)
    max_triggers_per_hour: int | None = Field(default=None, ge=1)
    required_capabilities: list[str] = Field(default_factory=list)
    permission_level: str = "read_only"
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventHandlerSpec(Spec):
    """Processing and routing of events of some types."""

    name: str = Field(min_length=1)
    event_types: list[str] = Field(default_factory=list)
    description: str | None = None
    transform_function: str | None = None
    enrichment_sources: list[str] = Field(default_factory=list)
    route_to: str | None = None
    routing_rules: list[dict[str, Any]] = Field(default_factory=list)
    retry_policy: dict[str, Any] = Field(default_factory=dict)
    dead_letter_queue: str | None = None
    required_capabilities: list[str] = Field(default_factory=list)
    permission_level: str = "read_only"
    metadata: dict[str, Any] = Field(default_factory=dict)
