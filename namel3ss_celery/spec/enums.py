"""Closed sets of the Namel3ss IR, as str-enums (so ``ParallelStrategy.ALL == "all"``)."""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A str-enum whose ``str()`` is its value (Python 3.10 has no ``enum.StrEnum``)."""

    def __str__(self) -> str:
        return str(self.value)


class ParallelStrategy(StrEnum):
    ALL = "all"
    ANY_SUCCESS = "any_success"
    RACE = "race"
    MAP_REDUCE = "map_reduce"
    COLLECT = "collect"


class QueueType(StrEnum):
    REDIS_STREAMS = "redis_streams"
    REDIS = "redis"
    RABBITMQ = "rabbitmq"
    MEMORY = "memory"


class Reliability(StrEnum):
    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class RetryBackoff(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class DistributionPolicy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LOAD_BASED = "load_based"
    STICKY = "sticky"
    LOCALITY_AWARE = "locality_aware"
    RANDOM = "random"


class FailureMode(StrEnum):
    RETRY_REMOTE = "retry_remote"
    RETRY_LOCAL = "retry_local"
    FAIL_FAST = "fail_fast"


class ScalingMetric(StrEnum):
    QUEUE_DEPTH = "queue_depth"
    CPU = "cpu"
    MEMORY = "memory"


class ExecutionMode(StrEnum):
    """How a trigger starts its run (``events.matching``): ``async`` dispatches it and goes on; ``sync`` makes
    the process that emitted the event wait for it (a bounded wait, never inside a worker); ``background``
    dispatches it like ``async``, its steps on the lowest priority."""

    ASYNC = "async"
    SYNC = "sync"
    BACKGROUND = "background"


class PermissionLevel(StrEnum):
    READ_ONLY = "read_only"
    READ_WRITE = "read_write"
    EXECUTE = "execute"
    ADMIN = "admin"
