"""The queue-depth rule of a pool that autoscales: its thresholds (``ScalingRule``) and how many processes
it should have for a given number of waiting messages (``desired_processes``; ``autoscale`` states the
rule in full). Pure: no broker, no worker."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigurationError
from ..spec import ScalingMetric, WorkerPoolSpec


@dataclass(frozen=True)
class ScalingRule:
    """A pool's queue-depth thresholds: messages per process wanted, and when to act."""

    target_value: float
    scale_up_threshold: float
    scale_down_threshold: float

    @classmethod
    def from_pool(cls, pool: WorkerPoolSpec) -> ScalingRule:
        """The rule of a pool that autoscales on queue depth.

        Raises:
            ConfigurationError: the pool does not autoscale, scales on another
                metric, has ``target_value`` not above 0, or a
                ``scale_down_threshold`` above its ``scale_up_threshold``.
        """
        problem = None
        if not pool.auto_scaling:
            problem = "has auto_scaling: false; run it with --concurrency, not --autoscale"
        elif pool.scaling_metric is not ScalingMetric.QUEUE_DEPTH:
            problem = (
                f"scales on {pool.scaling_metric}, and QueueDepthAutoscaler follows queue_depth only; "
                f"leave worker_autoscaler at Celery's default for it"
            )
        elif pool.target_value <= 0:
            problem = f"target_value must be above 0 (got {pool.target_value:g})"
        elif pool.scale_down_threshold > pool.scale_up_threshold:
            problem = (
                f"scale_down_threshold ({pool.scale_down_threshold:g}) is above "
                f"scale_up_threshold ({pool.scale_up_threshold:g})"
            )
        if problem is not None:
            raise ConfigurationError(f"worker pool {pool.name!r} {problem}", setting="worker_autoscaler")
        return cls(pool.target_value, pool.scale_up_threshold, pool.scale_down_threshold)


def desired_processes(depth: int, processes: int, rule: ScalingRule, *, min_processes: int, max_processes: int) -> int:
    """How many processes the pool should have now (the module docstring states the rule).

    Args:
        depth: messages waiting for the pool.
        processes: the processes it has.
        rule: the pool's thresholds.
        min_processes: the floor (``--autoscale``'s min).
        max_processes: the ceiling (``--autoscale``'s max; never below the floor).

    Returns:
        The process count to scale to; ``processes`` itself when nothing should change.
    """
    floor = max(min_processes, 0)
    ceiling = max(max_processes, floor)
    current = min(max(processes, floor), ceiling)
    wanted = min(max(math.ceil(depth / rule.target_value), floor), ceiling)
    per_process = depth / processes if processes > 0 else (math.inf if depth > 0 else 0.0)
    if per_process > rule.scale_up_threshold and wanted > current:
        return wanted
    if per_process < rule.scale_down_threshold and wanted < current:
        return wanted
    return current
