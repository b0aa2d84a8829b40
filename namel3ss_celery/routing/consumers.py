"""Which queues a worker consumes now: ``fallback_to_local`` asks before it publishes, and a wait that timed out
asks, to say why a run does not move ("no worker consumes queue 'reports'")."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..plan import fields
from ..plan.model import Plan
from ..registry import LAUNCH_TASK, STEP_TASK_PREFIX
from ..results import RunStatus
from .queues import Broker, adapter_queue, broker_kind

LAUNCH_LABEL = "its launch"  # what waits on the launch task's queue of a run not launched yet
INSPECT_TIMEOUT = 1.0  # seconds Redis workers have to say which queues they consume


def consumed(app: Any, queue: str) -> bool:
    """Whether any worker consumes ``queue`` now (see ``idle_queues``)."""
    return not idle_queues(app, [queue])


def idle_queues(app: Any, queues: Iterable[str]) -> list[str]:
    """The queues of ``queues`` (in order, once each) that no worker consumes now.

    RabbitMQ counts a queue's consumers (a passive declare; a queue never declared has none). Redis
    keeps no such count, so the workers are asked, once for all the queues
    (``inspect().active_queues()``, waiting ``INSPECT_TIMEOUT``). The embedded worker consumes every
    queue of its in-memory broker.
    """
    wanted = list(dict.fromkeys(queues))
    kind = broker_kind(str(app.conf.broker_url or "memory://"))
    if not wanted or kind is Broker.MEMORY:
        return []
    if kind is Broker.RABBITMQ:
        return [queue for queue in wanted if _rabbitmq_consumers(app, queue) == 0]
    replies = app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    served = {q.get("name") for consumed_queues in replies.values() for q in consumed_queues or ()}
    return [queue for queue in wanted if queue not in served]


def _rabbitmq_consumers(app: Any, queue: str) -> int:
    with app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            _name, _messages, consumers = channel.queue_declare(queue, passive=True)
        except connection.channel_errors:  # 404: the queue does not exist, so nobody consumes it
            return 0
        channel.close()
        return int(consumers)


def node_queues(app: Any, plan: Plan) -> dict[str, list[str]]:
    """Where the dispatching app sends each node's steps (its pools' queues, or where it routes
    ``n3.step.<target>``), and, under ``LAUNCH_LABEL``, the run's launch task: recorded with the run, so any
    process that reads the run later knows where its work waits, whatever its own routes.

    Steps of a ``fallback_to_local`` pool are left out: with nobody consuming their queue, they run
    where they were published, so they never wait there.
    """
    routed: dict[str, str] = {}

    def queue_of(target: str, pool: str | None) -> str | None:
        route = plan.pools.get(pool) if pool else None
        if route is not None:
            return None if route.fallback_to_local else route.queue
        if target not in routed:
            routed[target] = _routed_queue(app, STEP_TASK_PREFIX + target)
        return routed[target]

    queues: dict[str, list[str]] = {}
    for node in plan.nodes:
        pairs = dict.fromkeys((str(step.target), step.worker_pool) for step in node.block.steps)  # a few, once each
        found = [queue_of(target, pool) for target, pool in pairs]
        if node.block.fan_out is not None:
            found.append(queue_of(node.block.fan_out.target, None))
        queues[node.name] = [q for q in dict.fromkeys(found) if q is not None]
    roots = [n for n in plan.nodes if not n.depends_on]
    queues[LAUNCH_LABEL] = [adapter_queue(roots[0].block, plan.pools) or _routed_queue(app, LAUNCH_TASK)]
    return queues


def waiting_queues(queues: dict[str, list[str]], plan: Plan, record: Mapping[str, str]) -> dict[str, list[str]]:
    """Where a running run's work waits now: each queue, with what waits there (``node 'name'``, or
    ``its launch`` for a run no node of which was launched yet), from the run's ``node_queues``."""
    waiting: dict[str, list[str]] = {}
    if not any(fields.launched(n.name) in record for n in plan.nodes):
        return {queue: [LAUNCH_LABEL] for queue in queues.get(LAUNCH_LABEL, [])}
    for node in plan.nodes:
        if fields.launched(node.name) in record and fields.node_result(node.name) not in record:
            for queue in queues.get(node.name, []):
                waiting.setdefault(queue, []).append(f"node {node.name!r}")
    return waiting


def run_idle_queues(app: Any, record: Mapping[str, str] | None) -> dict[str, list[str]]:
    """The queues a running run (its ``record``) waits on that no worker consumes now, with what waits there."""
    if record is None or record.get(fields.STATUS) != RunStatus.RUNNING or fields.QUEUES not in record:
        return {}
    waiting = waiting_queues(json.loads(record[fields.QUEUES]), Plan.from_json(record[fields.PLAN]), record)
    return {queue: waiting[queue] for queue in idle_queues(app, waiting)}


def _routed_queue(app: Any, task_name: str) -> str:
    """The queue the app routes ``task_name`` to (its ``task_routes``, else the default queue)."""
    queue = app.amqp.router.route({}, task_name).get("queue")
    return str(getattr(queue, "name", queue) or app.conf.task_default_queue)
