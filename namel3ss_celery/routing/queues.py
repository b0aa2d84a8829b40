"""Worker pools as kombu ``Queue`` declarations, message priorities, and the Redis transport options.

A pool consumes the queue named by its ``queue_name``; the ``TaskQueueSpec``
whose ``name`` equals that queue name sets the queue's delivery contract
(dead-lettering, retries, visibility timeout). A pool without one gets the
IR defaults. Every task queue must be consumed by a pool, or be another
queue's dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kombu.entity import Exchange, Queue

from ..errors import RoutingError
from ..plan.model import PoolRoute
from ..spec import ParallelBlockSpec, ProgramSpec, TaskQueueSpec, WorkerPoolSpec
from ..spec.enums import StrEnum
from .distribution import region_queue, regions_of
from .policy import retry_policy, seconds_text

MIN_PRIORITY = 0  # the spec's lowest priority
MAX_PRIORITY = 9  # the spec's highest priority
DEFAULT_PRIORITY = 4  # what a step without a priority gets (set Celery's task_default_priority from it)
RABBITMQ_MAX_PRIORITY = 10  # x-max-priority of every pool queue
REDIS_PRIORITY_STEPS = tuple(range(MAX_PRIORITY + 1))  # one Redis list per level
REDIS_PRIORITY_SEP = "\x06\x16"  # kombu.transport.redis.Channel.sep: "<queue>\x06\x16<n>" holds priority n > 0
DEFAULT_VISIBILITY_TIMEOUT = float(TaskQueueSpec.model_fields["visibility_timeout"].default)


class Broker(StrEnum):
    """The brokers routing knows how to configure."""

    REDIS = "redis"
    RABBITMQ = "rabbitmq"
    MEMORY = "memory"


SCHEMES = {
    "redis": Broker.REDIS,
    "rediss": Broker.REDIS,
    "redis+socket": Broker.REDIS,
    "sentinel": Broker.REDIS,
    "unix": Broker.REDIS,
    "amqp": Broker.RABBITMQ,
    "amqps": Broker.RABBITMQ,
    "pyamqp": Broker.RABBITMQ,
    "librabbitmq": Broker.RABBITMQ,
    "rabbitmq": Broker.RABBITMQ,
    "memory": Broker.MEMORY,
}


def broker_kind(broker: str) -> Broker:
    """Which broker a URL (``redis://host/0``, ``amqp://...``) or a name (``redis``, ``rabbitmq``) means.

    Raises:
        RoutingError: the scheme is none of Redis, RabbitMQ (AMQP) or memory.
    """
    scheme = broker.split("://", 1)[0].lower() if "://" in broker else broker.lower()
    if scheme not in SCHEMES:
        raise RoutingError(f"unsupported broker {broker!r}; namel3ss-celery routes on: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[scheme]


def task_queue_of(program: ProgramSpec, pool: WorkerPoolSpec) -> TaskQueueSpec | None:
    """The ``TaskQueueSpec`` named like the pool's ``queue_name``, or ``None`` (the IR defaults apply)."""
    for queue in program.task_queues:
        if queue.name == pool.queue_name:
            return queue
    return None


def pool_queues(program: ProgramSpec) -> list[Queue]:
    """The kombu queues of a program: one per pool queue (and region queue), then one per dead-letter queue.

    Each pool queue is durable, bound to a direct exchange of its own name,
    and declared with ``x-max-priority`` (RabbitMQ priorities); when its task
    queue has a ``dead_letter_queue``, with ``x-dead-letter-exchange`` and
    ``x-dead-letter-routing-key`` pointing at that queue's exchange. Redis
    ignores these arguments (priorities come from ``transport_options``).

    Returns:
        The queues in program order, each name once.

    Raises:
        RoutingError: a task queue no pool consumes, or a dead-letter queue
            that is itself a pool's queue.
    """
    _check_links(program)
    queues: dict[str, Queue] = {}
    dead_letters: dict[str, Queue] = {}
    for pool in program.worker_pools:
        name = pool.queue_name
        if name in queues:
            continue
        arguments: dict[str, Any] = {"x-max-priority": RABBITMQ_MAX_PRIORITY}
        spec = task_queue_of(program, pool)
        if spec is not None and spec.dead_letter_queue:
            dlq = spec.dead_letter_queue
            arguments["x-dead-letter-exchange"] = dlq
            arguments["x-dead-letter-routing-key"] = dlq
            dead_letters.setdefault(dlq, declare_queue(dlq, {}))
        queues[name] = declare_queue(name, arguments)
        for region in regions_of(program, pool.name):  # a region's queue: the pool's queue, for some workers
            queues.setdefault(region_queue(name, region), declare_queue(region_queue(name, region), arguments))
    return [*queues.values(), *dead_letters.values()]


def broker_priority(priority: int, broker: str) -> int:
    """The message priority a broker needs for the spec's ``priority`` (0 lowest .. 9 highest).

    RabbitMQ delivers higher numbers first, so the value is kept. kombu's
    Redis transport pops the list of priority 0 first, so the value is
    inverted (9 - priority). The in-memory transport ignores priorities.

    Raises:
        RoutingError: ``priority`` is outside 0..9, or the broker is unknown.
    """
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise RoutingError(f"priority {priority} is outside {MIN_PRIORITY} (lowest) .. {MAX_PRIORITY} (highest)")
    if broker_kind(broker) is Broker.REDIS:
        return MAX_PRIORITY - priority
    return priority


def redis_priority_lists(queue_name: str) -> list[str]:
    """The Redis lists kombu splits a queue into under ``REDIS_PRIORITY_STEPS``, served first to last."""
    return [queue_name if step == 0 else f"{queue_name}{REDIS_PRIORITY_SEP}{step}" for step in REDIS_PRIORITY_STEPS]


def visibility_timeout(program: ProgramSpec) -> float:
    """The one visibility timeout of a Redis broker, in seconds.

    Queues that set ``visibility_timeout`` must agree, since kombu's Redis
    transport has one per connection; with none set, the longest of the
    queues' values (the IR default, 300, when there are no queues).

    Raises:
        RoutingError: queues set different visibility timeouts (each named with its value).
    """
    asked = {q.name: q.visibility_timeout for q in program.task_queues if "visibility_timeout" in q.model_fields_set}
    if len(set(asked.values())) > 1:
        listed = ", ".join(f"{name} ({seconds_text(value)}s)" for name, value in asked.items())
        raise RoutingError(
            f"task queues on one Redis broker share one visibility timeout, but they ask for different ones: "
            f"{listed}; give them the same visibility_timeout (longer than any step runs or waits to retry)"
        )
    if asked:
        return next(iter(asked.values()))
    return max((q.visibility_timeout for q in program.task_queues), default=DEFAULT_VISIBILITY_TIMEOUT)


def transport_options(program: ProgramSpec, broker: str) -> dict[str, Any]:
    """Celery ``broker_transport_options`` for the program on this broker (empty but for Redis).

    On Redis: ``priority_steps`` (all ten levels), ``queue_order_strategy``
    ``"priority"`` and one ``visibility_timeout``.

    Raises:
        RoutingError: visibility timeouts disagree, or a retry countdown is not
            shorter than the visibility timeout (Redis would deliver the
            waiting retry a second time).
    """
    if broker_kind(broker) is not Broker.REDIS:
        return {}
    timeout = visibility_timeout(program)
    for queue in program.task_queues:
        longest = max(retry_policy(queue)["countdowns"], default=0.0)
        if longest >= timeout:
            raise RoutingError(
                f"task queue {queue.name!r} waits up to {seconds_text(longest)}s before a retry, not less than the "
                f"Redis visibility timeout ({seconds_text(timeout)}s), so the retry would be delivered twice; "
                f"lower max_retry_delay or raise visibility_timeout"
            )
    return {
        "priority_steps": list(REDIS_PRIORITY_STEPS),
        "queue_order_strategy": "priority",
        "visibility_timeout": timeout,
    }


def declare_queue(name: str, arguments: dict[str, Any]) -> Queue:
    """A durable queue on its own direct exchange, with ``arguments`` (``x-max-priority``, dead-lettering)."""
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    queue: Queue = Queue(  # type: ignore[no-untyped-call]
        name, exchange, routing_key=name, durable=True, queue_arguments=arguments or None
    )
    return queue


def _check_links(program: ProgramSpec) -> None:
    consumed = {pool.queue_name for pool in program.worker_pools}
    dead_letters = {q.dead_letter_queue for q in program.task_queues if q.dead_letter_queue}
    for queue in program.task_queues:
        if queue.dead_letter_queue in consumed:
            raise RoutingError(
                f"task queue {queue.name!r} dead-letters into {queue.dead_letter_queue!r}, which a worker pool "
                f"consumes; a dead-letter queue must be one no pool reads"
            )
        if queue.name not in consumed and queue.name not in dead_letters:
            raise RoutingError(
                f"task queue {queue.name!r} is consumed by no worker pool (pool queue names: "
                f"{', '.join(sorted(consumed)) or 'none'}); a pool uses the task queue named like its queue_name"
            )


def adapter_queue(block: ParallelBlockSpec, pools: Mapping[str, PoolRoute] | None) -> str | None:
    """Where the adapter's own tasks for ``block`` go: the launch of a run that starts with it, its chord body
    and errback.

    When every step names a pool, the queue of the first step's pool: a deployment may run pool workers
    only, and those workers, which run the block's steps, also run these tasks. Otherwise (a step on the
    app's default queue, a fan-out, or a ``fallback_to_local`` pool, which may have no worker at all)
    ``None``: the app's default queue and routes.
    """
    if not block.steps or any(step.worker_pool is None for step in block.steps):
        return None
    route = (pools or {})[str(block.steps[0].worker_pool)]
    return None if route.fallback_to_local else route.queue
