"""Helpers about a run's nodes that the worker-side conductor and the local executor share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from celery.utils.nodenames import worker_direct

from ..registry import Registry
from ..results import ParallelExecutionResult, RunStatus
from ..routing.queues import declare_queue
from ..spec import ParallelBlockSpec, expand_fan_out
from .control import Decision
from .plan import Plan, PlanNode, PoolRoute
from .settle import settle_block

RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


def retry_delay(retries: int) -> float:
    """Exponential backoff for a block's ``retry_failed``: 0.5 s, 1 s, 2 s, ... capped at 30 s."""
    return float(min(RETRY_BASE_SECONDS * 2**retries, RETRY_MAX_SECONDS))


def feed_name(node: str) -> str:
    return f"feed:{node}"


_DECLARED_DEAD_LETTERS: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()  # per app, once per process


def declare_pool_queues(app: Any, pools: Mapping[str, PoolRoute]) -> None:
    """Make the app know each pool queue with its arguments (RabbitMQ's ``x-max-priority``) before publishing,
    so the broker declares it as the pool's workers do; declare each dead-letter queue on the broker now.

    A dead-letter queue must exist before a step can fail: RabbitMQ drops a message dead-lettered to an
    exchange with no queue bound. It is declared, not added to ``app.amqp.queues``, so that no worker
    started later in this process consumes it.
    """
    for route in pools.values():
        if route.queue not in app.amqp.queues:
            queue = worker_direct(route.affinity) if route.affinity else declare_queue(route.queue, route.arguments)
            app.amqp.queues.add(queue)
    declared = _DECLARED_DEAD_LETTERS.setdefault(app, set())
    missing = sorted({r.dead_letter for r in pools.values() if r.dead_letter} - declared)
    if missing:
        with app.connection_for_write() as connection:
            for name in missing:
                declare_queue(name, {})(connection.default_channel).declare()  # type: ignore[no-untyped-call]
        declared.update(missing)


def broken(node: PlanNode, reason: str, registry: Registry) -> ParallelExecutionResult:
    """A failed result for a block the adapter itself could not start or settle."""
    return settle_block(
        node.block.model_copy(update={"steps": []}), {}, registry, decision=Decision(RunStatus.FAILED, None, reason)
    )


def with_fan_out(node: PlanNode, context: dict[str, Any]) -> PlanNode:
    """The node with its fan-out expanded into steps over ``context`` (the node itself without one)."""
    if node.block.fan_out is None:
        return node
    return replace(node, block=expand_fan_out(node.block, context))


def launched(plan: Plan, record: dict[str, str], name: str) -> PlanNode:
    """A node as it was launched: with the steps its fan-out made, filed in the run record."""
    node = plan.by_name[name]
    expanded = record.get(f"node:{name}:block")
    return replace(node, block=ParallelBlockSpec.model_validate_json(expanded)) if expanded else node


def node_context(record: dict[str, str], outputs: dict[str, Any]) -> dict[str, Any]:
    """The run's context with the outputs of the nodes finished so far under ``"outputs"``."""
    context: dict[str, Any] = json.loads(record.get("context") or "{}")
    return {**context, "outputs": {**context.get("outputs", {}), **outputs}}
