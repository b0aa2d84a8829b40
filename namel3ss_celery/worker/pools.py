"""A process as a worker of one worker pool, and what installing on a Redis app sets for priorities."""

from __future__ import annotations

import os
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import click
from celery import Celery, bootsteps, signals
from celery.utils.log import mlevel
from celery.utils.nodenames import worker_direct
from celery.worker.components import GREEN_POOLS
from click.core import ParameterSource
from kombu.entity import Queue

from ..errors import ConfigurationError, RoutingError
from ..registry import STEP_TASK_PREFIX
from ..routing.autoscale import autoscaler_setting
from ..routing.distribution import distribution_of, matching, region_queue, regions_of
from ..routing.policy import delivery_options
from ..routing.queues import REDIS_PRIORITY_STEPS, Broker, broker_kind, pool_queues, task_queue_of, transport_options
from ..routing.workers import drop_given_options, find_pool, worker_env, worker_options
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
    broker = str(app.conf.broker_url or "")
    if broker_kind(broker or "memory://") is Broker.REDIS:  # one visibility timeout for this Redis broker
        options = dict(app.conf.broker_transport_options or {})
        visibility = float(transport_options(program, broker)["visibility_timeout"])
        options["visibility_timeout"] = visibility
        # kombu looks for lost (unacknowledged) messages every interval x throttle seconds (100 s by
        # default); look every third of the visibility timeout, at most every 10 s, so they come back soon.
        options.setdefault("unacked_restore_interval", max(1, min(10, int(visibility / 3))))
        options.setdefault("unacked_restore_throttle", 1)
        app.conf.broker_transport_options = options
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


def add_pool_option(app: Celery, n3: PoolHost) -> None:
    """``celery -A APP worker --n3-pool NAME``: serve one worker pool of ``NAMEL3SS_CELERY_PROGRAM``.

    The worker consumes that pool's queue (besides any ``-Q``), enforces its
    ``allowed_tools`` and runs as ``namel3ss-celery worker --pool NAME``
    would (``routing.workers.worker_options``): the pool's execution pool,
    ``--autoscale`` or ``--concurrency``, memory and task limits per child,
    time limits from ``timeout_seconds``, prefetch multiplier 1 and log level,
    with the pool's ``environment_variables`` in ``os.environ`` before any
    child process starts.

    An option the user gives explicitly on the command line wins over the
    pool's (``--concurrency`` or ``--autoscale`` replaces the pool's scaling
    as a whole) and is taken as given; the app's configuration
    (``worker_concurrency``, ``task_time_limit``...) does not win, nor do
    variables the worker inherited over the pool's ``environment_variables``.
    A pool that cannot run as specified stops the worker's start with a
    ``ConfigurationError`` naming it (see ``serve_worker``).
    """

    # Serve the pool at worker_init: the worker has read its command line and configuration, but has not yet
    # turned -P into a pool class nor built a bootstep. A bootstep would come too late for --autoscale: the Pool
    # step reads it from its own arguments, and the Autoscaler step decides in its __init__ whether to run, in
    # an order among steps that Celery does not fix. Celery logs and drops what a signal handler raises, though
    # (before logging is even set up), so the handler keeps its outcome and the ServePool step, whose errors do
    # stop the worker, raises it.
    outcomes: weakref.WeakKeyDictionary[Any, Exception | None] = weakref.WeakKeyDictionary()

    def start_serving(ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
        if name:

            def on_worker_init(sender: Any = None, **_: Any) -> None:
                if getattr(sender, "app", None) is app:
                    signals.worker_init.disconnect(on_worker_init)
                    try:
                        serve_worker(sender, n3, name, given_options(ctx))
                    except Exception as exc:  # noqa: BLE001 - raised again by ServePool, below
                        outcomes[sender] = exc
                    else:
                        outcomes[sender] = None

            signals.worker_init.connect(on_worker_init, weak=False)  # once, for the worker this command starts
        return name

    class ServePool(bootsteps.Step):  # type: ignore[misc]
        name = "namel3ss_celery.ServePool"

        def __init__(self, parent: Any, n3_pool: str | None = None, **kwargs: Any) -> None:
            if n3_pool:
                if parent not in outcomes:
                    raise ConfigurationError(
                        f"n3_pool={n3_pool!r} reached a worker that `celery worker --n3-pool` did not start: give "
                        "--n3-pool on the celery worker command line",
                        setting="n3_pool",
                    )
                error = outcomes.pop(parent)
                if error is not None:
                    raise error
            super().__init__(parent, **kwargs)

    app.user_options["worker"].add(
        click.Option(
            ["--n3-pool"],
            default=None,
            callback=start_serving,
            help="serve this namel3ss worker pool of NAMEL3SS_CELERY_PROGRAM, with its scaling and limits",
        )
    )

    def set_region(_ctx: click.Context, _param: click.Parameter, region: str | None) -> str | None:
        if region:
            n3.serve(region=region)
        return region

    app.user_options["worker"].add(
        click.Option(
            ["--n3-region"],
            default=None,
            callback=set_region,
            help="with --n3-pool: also consume the queue of this region of the pool (locality_aware)",
        )
    )
    app.steps["worker"].add(ServePool)


def given_options(ctx: click.Context) -> frozenset[str]:
    """The ``celery worker`` parameters the user gave explicitly (on the command line or in the environment).

    Args:
        ctx: the click context of the ``celery worker`` command, once parsed.

    Returns:
        Parameter names, as click names them (``concurrency``, ``autoscale``, ``pool``, ``queues``...).
    """
    # Ask click where each value came from. Comparing values with the defaults cannot tell: Celery turns an
    # absent --concurrency or --prefetch-multiplier into the app's worker_concurrency or
    # worker_prefetch_multiplier, and an absent -P into prefork or worker_pool, so `-c 8` typed by the user
    # and no -c with worker_concurrency=8 reach the worker as the same value.
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)
    return frozenset(
        param.name for param in ctx.command.params if param.name and ctx.get_parameter_source(param.name) in given
    )


def serve_worker(worker: Any, n3: PoolHost, name: str, given: Collection[str]) -> None:
    """Make a starting ``celery worker`` a worker of pool ``name``, at ``worker_init`` (see ``add_pool_option``).

    Args:
        worker: Celery's ``WorkController``: its command line and configuration
            read, its execution pool and bootsteps not yet built.
        n3: the extension installed on the worker's app.
        name: the pool's name.
        given: the worker command's parameters the user gave explicitly; they
            win over the pool's.

    Raises:
        ConfigurationError: no program is set; it has no such pool; the pool
            cannot run as specified (what ``worker_argv`` refuses, or a gevent or
            eventlet pool not given as ``-P``, which Celery must patch in before
            it loads the app). The message names the pool.
        SpecError: the program file is not a valid program.
    """
    n3.serve(pool=name)
    queues = worker.app.amqp.queues
    queue = n3.pool_service.queue if n3.pool_service is not None else ""
    if "queues" in given:  # -Q: the pool's queue besides those
        queues.select_add(queues[queue])
    else:
        queues.select([queue])
    with worker.app.connection_for_read() as connection:  # the broker this worker reads, even if broker_url is unset
        broker = connection.as_uri()
    try:
        program = load_program(str(n3.program_file))
        options = worker_options(program, name, broker)
        environment = worker_env(find_pool(program, name))
    except RoutingError as exc:
        raise ConfigurationError(f"celery worker --n3-pool {name}: {exc}", setting="NAMEL3SS_CELERY_PROGRAM") from exc
    kind = options["pool"]
    if kind in GREEN_POOLS and "pool" not in given:
        raise ConfigurationError(
            f"celery worker --n3-pool {name}: worker pool {name!r} runs the {kind} pool, which Celery patches in "
            f"before it loads the app: give -P {kind} on the command line",
            setting="worker_config.pool",
        )
    os.environ.update(environment)  # before the execution pool starts its processes or threads
    for key, value in drop_given_options(options, given).items():
        if key == "autoscale":
            # The Pool step takes --autoscale from the keyword arguments the worker builds its bootsteps with,
            # which are this same dict (WorkController.setup_instance keeps them as .options).
            worker.options["autoscale"] = value
        elif key == "pool":
            worker.pool_cls = value  # an alias the worker turns into its class right after worker_init
        elif key == "loglevel":
            worker.loglevel = mlevel(value)  # logging is set up after worker_init
        else:  # the attribute WorkController.setup_defaults set from the same option
            setattr(worker, key, value)
    worker.autoscaler_cls = worker.app.conf.worker_autoscaler  # the queue-depth one when serve_pool chose it


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
