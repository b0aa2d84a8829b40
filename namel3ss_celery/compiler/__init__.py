"""Spec to canvas. One module per strategy, each with one ``build`` function, chosen from ``BUILDERS``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import canvas
from celery.backends.redis import RedisBackend

from ..plan.kinds import Join
from ..plan.message import FedStep
from ..plan.model import PlanNode, PoolRoute
from ..spec import ParallelBlockSpec, ParallelStrategy
from . import all as all_strategy
from . import any_success, collect, map_reduce, race
from .steps import pool_queue, step_message, step_signatures

Builder = Callable[
    [Any, ParallelBlockSpec, str, str, dict[str, Any], "float | None", "Mapping[str, PoolRoute] | None"],
    canvas.Signature,
]

BUILDERS: dict[ParallelStrategy, Builder] = {
    ParallelStrategy.ALL: all_strategy.build,
    ParallelStrategy.COLLECT: collect.build,
    ParallelStrategy.MAP_REDUCE: map_reduce.build,
    ParallelStrategy.RACE: race.build,
    ParallelStrategy.ANY_SUCCESS: any_success.build,
}

CHORD_STRATEGIES = (ParallelStrategy.ALL, ParallelStrategy.MAP_REDUCE)
SMALL_BLOCK = 8  # up to this many steps: the counted join saves the chord body's hop, and dispatch publishes a run
# whose first blocks are this small itself, saving the launch task's hop


@dataclass
class Launch:
    """What starting a node publishes: a canvas now, the rest of a ``max_concurrency`` feed later.

    ``feed`` holds the steps beyond the first ``max_concurrency``, as encoded ``FedStep`` items;
    each finished step publishes the next.
    ``deadline`` is the block's absolute deadline (``timeout_seconds``), if any.
    """

    canvas: canvas.Signature
    feed: list[str] = field(default_factory=list)
    deadline: float | None = None


def compile_node(
    app: Any,
    node: PlanNode,
    run_id: str,
    context: dict[str, Any],
    pools: Mapping[str, PoolRoute] | None = None,
    skip: frozenset[int] = frozenset(),
) -> Launch:
    """What runs one node of a run (a block with at least one step).

    ``all`` and ``map_reduce`` are chords where the result backend joins them
    natively (Redis). Celery's key-value chord on other backends restores the
    whole group at every step (quadratic: 1000 steps take tens of seconds on the
    embedded default), so there, under ``max_concurrency`` (not every step is in
    the group), and for small blocks (where the chord body's extra task hop is
    most of the time), they use the counted join that ``collect`` uses.
    The steps at ``skip`` are left out: the publisher runs them itself and files their outcomes.
    """
    block = node.block
    deadline = time.time() + block.timeout_seconds if block.timeout_seconds else None
    if skip:  # steps its publisher runs itself (fallback_to_local): the rest file too, under the counted join
        indexes = [i for i in range(len(block.steps)) if i not in skip]
        group = step_signatures(app, block, run_id, node.name, context, Join.COUNT, deadline, indexes, pools=pools)
        return Launch(canvas.group(group), [], deadline)
    window = block.max_concurrency
    if window is not None and window < len(block.steps):
        first = step_signatures(
            app, block, run_id, node.name, context, Join.COUNT, deadline, range(window), feed=True, pools=pools
        )
        rest = [
            FedStep(
                str(block.steps[i].target),
                step_message(
                    block,
                    i,
                    run_id=run_id,
                    node=node.name,
                    context=context,
                    join=Join.COUNT,
                    feed=True,
                    deadline=deadline,
                    pools=pools,
                ),
                pool_queue(block.steps[i].worker_pool, pools),
            ).encode()
            for i in range(window, len(block.steps))
        ]
        return Launch(canvas.group(first), rest, deadline)
    strategy = block.strategy
    if strategy in CHORD_STRATEGIES and (len(block.steps) <= SMALL_BLOCK or not joins_natively(app.backend)):
        return Launch(collect.build(app, block, run_id, node.name, context, deadline, pools), [], deadline)
    return Launch(BUILDERS[strategy](app, block, run_id, node.name, context, deadline, pools), [], deadline)


def joins_natively(backend: Any) -> bool:
    """True for Celery's Redis result backend (and Sentinel), whose chord join is one atomic script per step."""
    return isinstance(backend, RedisBackend)
