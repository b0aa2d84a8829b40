"""fallback_to_local: which steps of a block its publisher runs itself, because no worker consumes their queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plan.model import PoolRoute
from ..spec import ParallelBlockSpec
from .consumers import consumed


def fallback_steps(app: Any, block: ParallelBlockSpec, pools: Mapping[str, PoolRoute]) -> frozenset[int]:
    """The steps of ``block`` in a ``fallback_to_local`` pool whose queue no worker consumes (each queue asked once)."""
    idle: dict[str, bool] = {}
    local = set()
    for index, step in enumerate(block.steps):
        route = pools.get(step.worker_pool) if step.worker_pool else None
        if route is None or not route.fallback_to_local:
            continue
        if route.queue not in idle:
            idle[route.queue] = not consumed(app, route.queue)
        if idle[route.queue]:
            local.add(index)
    return frozenset(local)
