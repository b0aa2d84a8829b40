"""A process as a worker of one worker pool, and what installing on a Redis app sets for priorities."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from celery import Celery, bootsteps

from .conductor import Conductor
from .errors import ConfigurationError, RoutingError
from .routing.autoscale import autoscaler_setting
from .routing.policy import delivery_options
from .routing.queues import REDIS_PRIORITY_STEPS, pool_queues, task_queue_of, transport_options
from .routing.workers import find_pool
from .spec import ScalingMetric, load_program

if TYPE_CHECKING:
    from .extension import Namel3ssCelery


def serve_pool(app: Celery, conductor: Conductor, program_file: str | None, name: str) -> str:
    """Make this process a worker of pool ``name``: its queue, delivery contract, autoscaler, allowed_tools.

    Returns:
        The pool's queue name.

    Raises:
        ConfigurationError: no program is set, or it has no such pool.
    """
    if not program_file:
        raise ConfigurationError(
            "NAMEL3SS_CELERY_POOL is set but NAMEL3SS_CELERY_PROGRAM is not", setting="NAMEL3SS_CELERY_PROGRAM"
        )
    try:
        program = load_program(program_file)
        pool = find_pool(program, name)
    except RoutingError as exc:
        raise ConfigurationError(str(exc), setting="NAMEL3SS_CELERY_POOL") from exc
    for queue in pool_queues(program):  # declared with their arguments (priorities) before the worker consumes
        if queue.name == pool.queue_name and queue.name not in app.amqp.queues:
            app.amqp.queues.add(queue)
    if pool.auto_scaling and pool.scaling_metric == ScalingMetric.QUEUE_DEPTH:
        # With --autoscale, grow and shrink by the depth of the pool's queue, not Celery's own rule.
        app.conf.worker_autoscaler = autoscaler_setting()
        os.environ.setdefault("NAMEL3SS_CELERY_POOL", pool.name)
        os.environ.setdefault("NAMEL3SS_CELERY_PROGRAM", os.path.abspath(program_file))
    contract = task_queue_of(program, pool)
    if contract is not None:  # the queue's delivery contract, for this worker's tasks
        delivery = delivery_options(contract)
        app.conf.task_acks_late = delivery["acks_late"]
        app.conf.task_reject_on_worker_lost = delivery["reject_on_worker_lost"]
    broker = str(app.conf.broker_url or "")
    if broker.startswith(("redis://", "rediss://")):  # one visibility timeout for this Redis broker
        options = dict(app.conf.broker_transport_options or {})
        visibility = float(transport_options(program, broker)["visibility_timeout"])
        options["visibility_timeout"] = visibility
        # kombu looks for lost (unacknowledged) messages every interval x throttle seconds (100 s by
        # default); look every third of the visibility timeout, at most every 10 s, so they come back soon.
        options.setdefault("unacked_restore_interval", max(1, min(10, int(visibility / 3))))
        options.setdefault("unacked_restore_throttle", 1)
        app.conf.broker_transport_options = options
    conductor.pool_name = pool.name
    conductor.allowed_tools = tuple(pool.allowed_tools)
    return pool.queue_name


def add_pool_option(app: Celery, n3: Namel3ssCelery) -> None:
    """``celery -A APP worker --n3-pool NAME``: serve one worker pool of ``NAMEL3SS_CELERY_PROGRAM``.

    The worker consumes that pool's queue (besides any ``-Q``) and enforces its ``allowed_tools``.
    """

    class ServePool(bootsteps.Step):  # type: ignore[misc]
        name = "namel3ss_celery.ServePool"

        def __init__(self, parent: Any, n3_pool: str | None = None, **kwargs: Any) -> None:
            if n3_pool:
                n3.settings = replace(n3.settings, pool=n3_pool)
                n3._serve_pool(n3_pool)
                parent.app.amqp.queues.select([n3.pool_queue])
            super().__init__(parent, **kwargs)

    app.user_options["worker"].add(
        click.Option(["--n3-pool"], default=None, help="serve this namel3ss worker pool (NAMEL3SS_CELERY_PROGRAM)")
    )
    app.steps["worker"].add(ServePool)


def use_all_redis_priorities(app: Celery) -> None:
    """On Redis, steps' ``priority`` needs kombu's ten priority lists (kombu serves them in priority order).

    Raises:
        ConfigurationError: the app already sets other ``priority_steps``.
    """
    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        return
    options = dict(app.conf.broker_transport_options or {})
    steps = options.get("priority_steps")
    if steps is not None and list(steps) != list(REDIS_PRIORITY_STEPS):
        raise ConfigurationError(
            f"broker_transport_options['priority_steps'] is {steps!r}; namel3ss-celery maps step priorities onto "
            f"all ten Redis levels {list(REDIS_PRIORITY_STEPS)}: remove it or set that",
            setting="broker_transport_options",
        )
    options.setdefault("priority_steps", list(REDIS_PRIORITY_STEPS))
    app.conf.broker_transport_options = options
