"""``celery -A APP worker --n3-pool NAME [--n3-region REGION]``: a plain ``celery worker`` command that
serves one worker pool of the program, with the pool's worker arguments where the command line did not
give its own (``given_options``), set at ``worker_init`` (``serve_worker``)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Collection
from typing import Any

import click
from celery import Celery, bootsteps, signals
from celery.utils.log import mlevel
from celery.worker.components import GREEN_POOLS
from click.core import ParameterSource

from ..errors import ConfigurationError, RoutingError
from ..routing.workers import drop_given_options, find_pool, worker_env, worker_options
from ..spec import load_program
from .pools import PoolHost


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
