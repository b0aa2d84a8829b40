"""A worker pool as ``celery worker`` options and an environment.

On a host, one ``celery worker`` runs the pool's ``min_workers`` to
``max_workers`` processes with ``--autoscale=max,min`` (``--concurrency``
when the pool does not scale). Where instances are scaled from outside
(Kubernetes pods under KEDA), each instance runs a fixed ``--concurrency``
and the instances count as the workers. ``worker_config`` may hold ``pool`` (Celery's
execution pool: prefork, threads, solo, gevent, eventlet), ``concurrency``
(processes per worker instance), ``loglevel`` and ``max_tasks_per_child``.
``worker_options`` is what a pool asks of its workers; ``worker_argv`` writes
it as options, ``celery worker --n3-pool`` (``pools.py``) sets it on the worker.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, TypedDict, cast

from ..errors import RoutingError
from ..spec import ProgramSpec, WorkerPoolSpec
from .policy import HARD_LIMIT_GRACE, delivery_options, seconds_text
from .queues import Broker, broker_kind, task_queue_of, visibility_timeout

WORKER_CONFIG_KEYS = ("pool", "concurrency", "loglevel", "max_tasks_per_child")
CELERY_POOLS = ("prefork", "processes", "threads", "solo", "gevent", "eventlet")
PROCESS_POOLS = ("prefork", "processes")  # the pools that can grow, shrink and recycle child processes
UNTIMED_POOLS = ("threads", "solo")  # the pools that enforce no time limits
SCALING_OPTIONS = frozenset({"concurrency", "autoscale"})  # one choice: a fixed process count, or bounds to scale in
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def find_pool(program: ProgramSpec, name: str) -> WorkerPoolSpec:
    """The worker pool called ``name``.

    Raises:
        RoutingError: no pool has that name (the known ones are listed).
    """
    for pool in program.worker_pools:
        if pool.name == name:
            return pool
    known = ", ".join(pool.name for pool in program.worker_pools) or "none"
    raise RoutingError(f"no worker pool named {name!r}; known pools: {known}")


class WorkerOptions(TypedDict, total=False):
    """The ``celery worker`` settings a pool asks for, keyed by the worker command's parameter names.

    ``concurrency`` and ``autoscale`` exclude each other; a key that is absent
    is a setting the pool leaves to Celery.
    """

    prefetch_multiplier: int
    pool: str  # Celery's execution pool: prefork, threads, solo, gevent, eventlet
    concurrency: int
    autoscale: tuple[int, int]  # (max, min), as ``--autoscale=max,min``
    max_memory_per_child: int  # KiB
    max_tasks_per_child: int
    soft_time_limit: float
    time_limit: float
    loglevel: str


def worker_options(
    program: ProgramSpec, pool_name: str, broker: str, *, concurrency: int | None = None
) -> WorkerOptions:
    """The scaling, memory, time-limit and pool settings of ``celery worker`` for one pool.

    The one source of what a pool asks of its workers: ``worker_argv`` writes
    these as options, ``celery worker --n3-pool`` sets them on the worker.

    Args:
        program: the program that declares the pool.
        pool_name: the pool's ``name``.
        broker: the broker URL or name (``redis``, ``rabbitmq``); on Redis the
            hard time limit must be shorter than the visibility timeout.
        concurrency: a fixed process count per worker instance, for when
            instances are scaled from outside (Kubernetes); ``None`` follows
            the pool (``autoscale`` of ``max_workers, min_workers``, or
            ``concurrency`` from ``worker_config.concurrency`` or ``max_workers``).

    Returns:
        Always ``prefetch_multiplier`` 1, ``pool`` and one of ``concurrency`` or
        ``autoscale``; then ``max_memory_per_child`` (from ``max_memory_mb``),
        ``max_tasks_per_child``, ``soft_time_limit`` and ``time_limit`` (from
        ``timeout_seconds``) and ``loglevel`` when the pool sets them.

    Raises:
        RoutingError: unknown pool; a ``worker_config`` key or pool Celery does
            not have; autoscaling, ``max_memory_mb`` or a timeout on a pool that
            cannot honour it; an ``exactly_once`` queue; on Redis, a time limit
            not shorter than the visibility timeout.
    """
    pool = find_pool(program, pool_name)
    config = _worker_config(pool)
    queue = task_queue_of(program, pool)
    acks_late = True if queue is None else delivery_options(queue)["acks_late"]
    kind: str = config.get("pool", "prefork")
    options = WorkerOptions(prefetch_multiplier=1, pool=kind)
    if concurrency is not None:
        _require(concurrency >= 1, pool, f"concurrency must be at least 1 (got {concurrency})")
        options["concurrency"] = concurrency
    elif pool.auto_scaling:
        _require(kind in PROCESS_POOLS, pool, f"auto_scaling needs the prefork pool; the {kind} pool cannot grow")
        _require(
            "concurrency" not in config,
            pool,
            "worker_config.concurrency fixes the process count, auto_scaling asks for --autoscale: drop one",
        )
        options["autoscale"] = (pool.max_workers, pool.min_workers)
    else:
        options["concurrency"] = int(config.get("concurrency", pool.max_workers))
    if pool.max_memory_mb is not None:
        _require(kind in PROCESS_POOLS, pool, f"max_memory_mb recycles child processes; the {kind} pool has none")
        options["max_memory_per_child"] = pool.max_memory_mb * 1024
    if "max_tasks_per_child" in config:
        _require(kind in PROCESS_POOLS, pool, f"max_tasks_per_child needs the prefork pool, not {kind}")
        options["max_tasks_per_child"] = int(config["max_tasks_per_child"])
    if pool.timeout_seconds is not None:
        _require(kind not in UNTIMED_POOLS, pool, f"timeout_seconds needs time limits, which the {kind} pool lacks")
        hard = pool.timeout_seconds + HARD_LIMIT_GRACE
        if acks_late and broker_kind(broker) is Broker.REDIS:
            _check_visibility(program, pool, hard)
        options["soft_time_limit"] = float(pool.timeout_seconds)
        options["time_limit"] = float(hard)
    else:
        broker_kind(broker)  # refuse an unknown broker even when nothing depends on it
    if "loglevel" in config:
        options["loglevel"] = str(config["loglevel"])
    return options


def drop_given_options(options: WorkerOptions, given: Collection[str]) -> WorkerOptions:
    """A pool's worker settings less those a worker's command line gives itself (the command line wins).

    ``concurrency`` and ``autoscale`` are one choice: giving either drops both.

    Args:
        options: what ``worker_options`` returned.
        given: the names of the options given on the command line.

    Returns:
        The settings still to apply.
    """
    dropped = set(given)
    if dropped & SCALING_OPTIONS:
        dropped |= SCALING_OPTIONS
    kept = {key: value for key, value in options.items() if key not in dropped}
    return cast(WorkerOptions, kept)


def worker_argv(program: ProgramSpec, pool_name: str, broker: str, *, concurrency: int | None = None) -> list[str]:
    """The options of ``celery -A APP worker`` for one pool (what follows ``worker``): ``worker_options`` as flags.

    Args:
        program: the program that declares the pool.
        pool_name: the pool's ``name``.
        broker: the broker URL or name, as for ``worker_options``.
        concurrency: a fixed process count per worker instance, as for ``worker_options``.

    Returns:
        ``-Q <queue> -n <pool>@%h --prefetch-multiplier=1``, then the scaling,
        memory and time-limit options the pool asks for (``--pool`` unless prefork).

    Raises:
        RoutingError: as ``worker_options``.
    """
    pool = find_pool(program, pool_name)
    argv = ["-Q", pool.queue_name, "-n", f"{pool.name}@%h"]
    for key, value in worker_options(program, pool_name, broker, concurrency=concurrency).items():
        if key != "pool" or value != "prefork":  # prefork is Celery's default
            argv.append(f"--{key.replace('_', '-')}={_flag_value(value)}")
    return argv


def worker_env(pool: WorkerPoolSpec) -> dict[str, str]:
    """The environment a pool's workers run with: its ``environment_variables``.

    Raises:
        RoutingError: a variable name is not a shell identifier.
    """
    for name in pool.environment_variables:
        _require(bool(ENV_NAME.match(name)), pool, f"environment variable name {name!r} is not a valid identifier")
    return dict(pool.environment_variables)


def instance_concurrency(pool: WorkerPoolSpec) -> int:
    """Processes (or threads) per worker instance when instances are scaled from outside (Kubernetes pods).

    ``worker_config.concurrency``, default 1: then one instance is one of the
    pool's ``min_workers``..``max_workers``.

    Raises:
        RoutingError: ``worker_config`` is invalid.
    """
    return int(_worker_config(pool).get("concurrency", 1))


def stop_timeout(pool: WorkerPoolSpec) -> float | None:
    """Seconds a stopping worker should be given to finish its running steps, when the pool bounds them."""
    if pool.timeout_seconds is None:
        return None
    return pool.timeout_seconds + 2 * HARD_LIMIT_GRACE


def _worker_config(pool: WorkerPoolSpec) -> dict[str, Any]:
    config = dict(pool.worker_config)
    unknown = sorted(set(config) - set(WORKER_CONFIG_KEYS))
    _require(not unknown, pool, f"unknown worker_config keys {unknown}; known: {', '.join(WORKER_CONFIG_KEYS)}")
    kind = config.get("pool", "prefork")
    _require(kind in CELERY_POOLS, pool, f"worker_config.pool {kind!r} is not one of {', '.join(CELERY_POOLS)}")
    for key in ("concurrency", "max_tasks_per_child"):
        value = config.get(key, 1)
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        _require(whole, pool, f"worker_config.{key} must be a whole number of at least 1 (got {value!r})")
    return config


def _flag_value(value: object) -> str:
    if isinstance(value, tuple):  # autoscale: max,min
        return ",".join(str(n) for n in value)
    return seconds_text(value) if isinstance(value, float) else str(value)


def _check_visibility(program: ProgramSpec, pool: WorkerPoolSpec, hard_limit: float) -> None:
    timeout = visibility_timeout(program)
    _require(
        hard_limit < timeout,
        pool,
        f"a step may run {seconds_text(hard_limit)}s (timeout_seconds plus {seconds_text(HARD_LIMIT_GRACE)}s to "
        f"the hard time limit), not less than the Redis visibility timeout ({seconds_text(timeout)}s), so Redis "
        f"would deliver a running step again; raise the task queues' visibility_timeout",
    )


def _require(condition: bool, pool: WorkerPoolSpec, message: str) -> None:
    if not condition:
        raise RoutingError(f"worker pool {pool.name!r}: {message}")
