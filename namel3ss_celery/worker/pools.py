"""A process as a worker of one worker pool, and what installing on a Redis app sets for priorities."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery, bootsteps
from celery.utils.nodenames import worker_direct
from kombu.entity import Queue

from ..errors import ConfigurationError, RoutingError
from ..registry import STEP_TASK_PREFIX
from ..routing.autoscale import autoscaler_setting
from ..routing.distribution import distribution_of, matching, region_queue, regions_of
from ..routing.policy import delivery_options
from ..routing.queues import REDIS_PRIORITY_STEPS, Broker, broker_kind, pool_queues, task_queue_of, transport_options
from ..routing.workers import find_pool
from ..spec import DistributionPolicy, ProgramSpec, ScalingMetric, load_program
from .step_task import StepHandler


class PoolHost(Protocol):
    """What a pool worker needs of the extension installed on its app (``Namel3ssCelery``)."""

    steps: StepHandler
    pool_service: PoolService | None

    @property
    def program_file(self) -> str | None: ...

    @property
    def pool_name(self) -> str | None: ...

    def serve(self, pool: str | None = None, region: str | None = None) -> None:
        """Serve ``pool`` (and its ``region``'s queue) in this process."""
        ...


@dataclass(frozen=True)
class PoolService:
    """What a pool worker consumes besides its pool's queue, and the names it must not run under."""

    queue: str  # the pool's queue
    regions: tuple[Queue, ...] = ()  # its region's queue (locality_aware), when started with a region
    direct: bool = False  # its own direct queue (sticky keys, worker_affinity)
    avoid_workers: tuple[str, ...] = ()  # node names or patterns that must not serve the pool


def serve_pool(
    app: Celery, steps: StepHandler, program_file: str | None, name: str, region: str | None = None
) -> PoolService:
    """Make this process a worker of pool ``name``: its queue, delivery contract, autoscaler, allowed_tools.

    Returns:
        The pool's queue and what else the worker consumes (see ``serve_placement``).

    Raises:
        ConfigurationError: no program is set, it has no such pool, or ``region`` is not a region of its steps.
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
        # Tasks already bound (a worker finalizes the app before worker_init, where --n3-pool serves the
        # pool) copied the old values: set them on the step tasks too.
        for task in list(app.tasks.values()):
            if task.name.startswith(STEP_TASK_PREFIX):
                task.acks_late = delivery["acks_late"]
                task.reject_on_worker_lost = delivery["reject_on_worker_lost"]
    use_program_visibility(app, program)
    steps.pool_name = pool.name
    steps.sticky.queue = pool.queue_name
    steps.allowed_tools = tuple(pool.allowed_tools)
    steps.allowed_agents = tuple(pool.allowed_agents)
    config = distribution_of(program, name)
    return PoolService(
        pool.queue_name,
        _region_queues(program, pool.queue_name, name, region),
        config is not None
        and (config.distribution_policy == DistributionPolicy.STICKY or bool(config.worker_affinity)),
        tuple(config.avoid_workers) if config is not None else (),
    )


def _region_queues(program: ProgramSpec, queue: str, pool: str, region: str | None) -> tuple[Queue, ...]:
    if region is None:
        return ()
    regions = regions_of(program, pool)
    if region not in regions:
        raise ConfigurationError(
            f"worker pool {pool!r} sends no steps to region {region!r} (its regions: {', '.join(regions) or 'none'}; "
            f"a locality_aware distributed config with locality_preference names one)",
            setting="NAMEL3SS_CELERY_REGION",
        )
    wanted = region_queue(queue, region)
    return tuple(q for q in pool_queues(program) if q.name == wanted)


def serve_placement(app: Celery, n3: PoolHost) -> None:
    """A bootstep for pool workers: refuse a node name the pool's ``avoid_workers`` names; consume the
    region's queue and the worker's own direct queue where the pool's distributed config sends steps there."""

    class ServePlacement(bootsteps.Step):  # type: ignore[misc]
        name = "namel3ss_celery.ServePlacement"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            service = n3.pool_service
            if service is not None:
                avoided = matching(service.avoid_workers, parent.hostname)
                if avoided is not None:
                    raise ConfigurationError(
                        f"worker {parent.hostname!r} may not serve pool {n3.pool_name!r}: its distributed "
                        f"config avoids {avoided!r} (avoid_workers); start it under another name (-n)",
                        setting="avoid_workers",
                    )
                queues = parent.app.amqp.queues
                for queue in service.regions:
                    queues.select_add(queue)
                if service.direct:  # Celery's worker_direct queue, <node>.dq2, where sticky keys are forwarded
                    queues.select_add(worker_direct(parent.hostname))
                    n3.steps.sticky.direct = True  # only a worker that reads its direct queue may keep sticky keys
            super().__init__(parent, **kwargs)

    app.steps["worker"].add(ServePlacement)


def use_all_redis_priorities(app: Celery) -> None:
    """On Redis, steps' ``priority`` needs kombu's ten priority lists (kombu serves them in priority order).

    Raises:
        ConfigurationError: the app already sets other ``priority_steps``.
    """
    if broker_kind(str(app.conf.broker_url or "memory://")) is not Broker.REDIS:
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


def use_program_visibility(app: Celery, program: ProgramSpec) -> None:
    """Give a worker on a Redis broker the program's one visibility timeout. Every worker of the deployment
    needs it, not only pool workers: kombu keeps one list of unacknowledged messages for all queues, and each
    consumer puts back those older than its own timeout, so a worker left at kombu's 3600 s would deliver
    again a pool's steps that may run longer."""
    broker = str(app.conf.broker_url or "")
    if broker_kind(broker or "memory://") is not Broker.REDIS:
        return
    options = dict(app.conf.broker_transport_options or {})
    visibility = float(transport_options(program, broker)["visibility_timeout"])
    options["visibility_timeout"] = visibility
    # kombu looks for lost (unacknowledged) messages every interval x throttle seconds (100 s by
    # default); look every third of the visibility timeout, at most every 10 s, so they come back soon.
    options.setdefault("unacked_restore_interval", max(1, min(10, int(visibility / 3))))
    options.setdefault("unacked_restore_throttle", 1)
    app.conf.broker_transport_options = options
