"""Pools and queues to kombu ``Queue``s, priorities, transport options, retry and delivery policy, worker options.

Pure functions of the specs: nothing here talks to a broker.
"""

from .policy import delivery_options, retry_countdown, retry_policy
from .queues import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Broker,
    broker_kind,
    broker_priority,
    pool_queues,
    redis_priority_lists,
    task_queue_of,
    transport_options,
    visibility_timeout,
)
from .workers import find_pool, instance_concurrency, stop_timeout, worker_argv, worker_env

__all__ = [
    # queues and priorities
    "Broker",
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "broker_kind",
    "broker_priority",
    "pool_queues",
    "redis_priority_lists",
    "task_queue_of",
    "transport_options",
    "visibility_timeout",
    # retry and delivery
    "delivery_options",
    "retry_countdown",
    "retry_policy",
    # workers
    "find_pool",
    "instance_concurrency",
    "stop_timeout",
    "worker_argv",
    "worker_env",
]
