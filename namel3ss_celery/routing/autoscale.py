"""A Celery autoscaler that follows a pool's ``scaling_metric: queue_depth``.

Celery's own ``Autoscaler`` sizes the pool by the messages one worker has
reserved. ``QueueDepthAutoscaler`` sizes it by the work waiting for the pool,
with the pool's ``target_value``, ``scale_up_threshold`` and
``scale_down_threshold``. Put it in the ``worker_autoscaler`` setting (see
``autoscaler_setting``); it runs only with ``--autoscale=max,min``, whose
bounds it keeps (``namel3ss-celery worker --pool`` derives them from
``max_workers`` and ``min_workers``).

The rule, with ``depth`` the waiting messages and ``p`` the current processes:

- depth = the messages ready in the broker in every queue the worker consumes
  (Redis: ``LLEN`` of the queue's list and of kombu's priority lists
  ``<queue>\\x06\\x16<n>``; RabbitMQ and other transports: a passive
  ``queue_declare``'s ``message_count``), plus the messages this worker has
  prefetched but not yet started (the broker no longer counts those).
- wanted = ``ceil(depth / target_value)``, clamped to [min, max] of ``--autoscale``.
- A pool outside [min, max] is first brought inside.
- Scale up to wanted when ``depth / p > scale_up_threshold`` (any depth
  counts as infinite per process when ``p`` is 0).
- Scale down to wanted when ``depth / p < scale_down_threshold``, and only
  once no message was received and no process added for ``keepalive``
  seconds (Celery's ``scale_down``); only idle processes are stopped.
- Otherwise keep ``p``: between the thresholds nothing changes.

Celery calls the rule on every task message and every ``keepalive`` seconds
(``AUTOSCALE_KEEPALIVE``, default 30, read when the autoscaler is built);
the broker is asked at most once a second (a message received in between
schedules one more check for when that second is up). When the broker
cannot be read, the autoscaler logs it and keeps the pool as it is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any

from celery.utils.log import get_logger
from celery.worker import state
from celery.worker.autoscale import Autoscaler
from kombu.exceptions import OperationalError

from ..errors import ConfigurationError, RoutingError, SpecError
from ..settings import ENV_KEYS, Settings
from ..spec import ScalingMetric, WorkerPoolSpec, load_program
from .queues import redis_priority_lists
from .workers import find_pool

AUTOSCALER_PATH = "namel3ss_celery.routing.autoscale:QueueDepthAutoscaler"
KEEPALIVE_ENV = "AUTOSCALE_KEEPALIVE"  # the variable Celery's own autoscaler reads
DEFAULT_KEEPALIVE = 30.0  # Celery's default, in seconds
MEASURE_INTERVAL = 1.0  # the broker is asked at most this often (seconds)
PROGRAM_ENV = ENV_KEYS["program"]
POOL_ENV = ENV_KEYS["pool"]

logger = get_logger(__name__)


def autoscaler_setting() -> str:
    """The value of Celery's ``worker_autoscaler`` setting that selects ``QueueDepthAutoscaler``."""
    return AUTOSCALER_PATH


@dataclass(frozen=True)
class ScalingRule:
    """A pool's queue-depth thresholds: messages per process wanted, and when to act."""

    target_value: float
    scale_up_threshold: float
    scale_down_threshold: float

    @classmethod
    def from_pool(cls, pool: WorkerPoolSpec) -> ScalingRule:
        """The rule of a pool that autoscales on queue depth.

        Raises:
            ConfigurationError: the pool does not autoscale, scales on another
                metric, has ``target_value`` not above 0, or a
                ``scale_down_threshold`` above its ``scale_up_threshold``.
        """
        problem = None
        if not pool.auto_scaling:
            problem = "has auto_scaling: false; run it with --concurrency, not --autoscale"
        elif pool.scaling_metric is not ScalingMetric.QUEUE_DEPTH:
            problem = (
                f"scales on {pool.scaling_metric}, and QueueDepthAutoscaler follows queue_depth only; "
                f"leave worker_autoscaler at Celery's default for it"
            )
        elif pool.target_value <= 0:
            problem = f"target_value must be above 0 (got {pool.target_value:g})"
        elif pool.scale_down_threshold > pool.scale_up_threshold:
            problem = (
                f"scale_down_threshold ({pool.scale_down_threshold:g}) is above "
                f"scale_up_threshold ({pool.scale_up_threshold:g})"
            )
        if problem is not None:
            raise ConfigurationError(f"worker pool {pool.name!r} {problem}", setting="worker_autoscaler")
        return cls(pool.target_value, pool.scale_up_threshold, pool.scale_down_threshold)


def desired_processes(depth: int, processes: int, rule: ScalingRule, *, min_processes: int, max_processes: int) -> int:
    """How many processes the pool should have now (the module docstring states the rule).

    Args:
        depth: messages waiting for the pool.
        processes: the processes it has.
        rule: the pool's thresholds.
        min_processes: the floor (``--autoscale``'s min).
        max_processes: the ceiling (``--autoscale``'s max; never below the floor).

    Returns:
        The process count to scale to; ``processes`` itself when nothing should change.
    """
    floor = max(min_processes, 0)
    ceiling = max(max_processes, floor)
    current = min(max(processes, floor), ceiling)
    wanted = min(max(math.ceil(depth / rule.target_value), floor), ceiling)
    per_process = depth / processes if processes > 0 else (math.inf if depth > 0 else 0.0)
    if per_process > rule.scale_up_threshold and wanted > current:
        return wanted
    if per_process < rule.scale_down_threshold and wanted < current:
        return wanted
    return current


def broker_depth(connection: Any, queues: Iterable[str]) -> int:
    """Messages ready in the broker in these queues (a kombu ``Connection``; delivered, unacked ones not counted).

    Redis: ``LLEN`` of each queue's list and of its priority lists (a missing
    list counts 0). Other transports: a passive ``queue_declare``; a queue
    not declared yet counts 0.

    Raises:
        kombu's ``OperationalError``, or the transport's ``connection_errors``
        and ``channel_errors`` (but a queue's NOT_FOUND).
    """
    names = list(dict.fromkeys(queues))
    if connection.transport.driver_type == "redis":
        with connection.default_channel.conn_or_acquire() as client, client.pipeline() as pipe:
            for name in names:
                for key in redis_priority_lists(name):
                    pipe.llen(key)
            return sum(int(size) for size in pipe.execute())
    total = 0
    for name in names:
        with connection.channel() as channel:  # a fresh channel each time: NOT_FOUND closes it on RabbitMQ
            try:
                total += int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors as exc:
                if not _not_found(exc):
                    raise
    return total


def local_backlog() -> int:
    """Messages this worker process has prefetched and not yet handed to a pool process."""
    active = state.active_requests
    return sum(1 for request in list(state.reserved_requests) if request not in active)


def keepalive_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Seconds from ``AUTOSCALE_KEEPALIVE`` (default 30), as Celery reads it, but at call time.

    Raises:
        ConfigurationError: the value is not a number above 0.
    """
    text = (os.environ if environ is None else environ).get(KEEPALIVE_ENV, "")
    if not text:
        return DEFAULT_KEEPALIVE
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ConfigurationError(f"{KEEPALIVE_ENV} must be seconds above 0, not {text!r}", setting=KEEPALIVE_ENV)
    return seconds


def scaling_pool(settings: Settings) -> WorkerPoolSpec:
    """The pool this worker serves: ``NAMEL3SS_CELERY_POOL`` of the program ``NAMEL3SS_CELERY_PROGRAM``.

    Raises:
        ConfigurationError: a variable is unset (it is named), the program
            cannot be loaded, or it has no such pool.
    """
    program_file, pool_name = settings.program, settings.pool
    if not program_file or not pool_name:
        missing = [env for env, value in ((PROGRAM_ENV, program_file), (POOL_ENV, pool_name)) if not value]
        raise ConfigurationError(
            f"QueueDepthAutoscaler reads its worker pool's thresholds from {PROGRAM_ENV} (the program file) and "
            f"{POOL_ENV} (the pool's name), but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"not set; `namel3ss-celery worker --pool NAME` sets both",
            setting=missing[0],
        )
    try:
        program = load_program(program_file)
    except SpecError as exc:
        raise ConfigurationError(f"{PROGRAM_ENV}={program_file}: {exc}", setting=PROGRAM_ENV) from exc
    try:
        return find_pool(program, pool_name)
    except RoutingError as exc:
        raise ConfigurationError(f"{POOL_ENV}={pool_name}: {exc}", setting=POOL_ENV) from exc


class QueueDepthAutoscaler(Autoscaler):  # type: ignore[misc]
    """Celery's autoscaler, sizing the pool by queue depth instead of reserved messages.

    Celery builds it with the worker's pool and ``--autoscale`` bounds when
    ``worker_autoscaler`` names it. It keeps Celery's ``scale_up``,
    ``scale_down`` (with its keep-alive), ``update`` (the ``autoscale``
    remote control) and ``keepalive``; ``qty`` is the process count the rule
    last asked for. It reads the broker through its own kombu connection,
    made from the worker app's broker settings.

    Args:
        pool: the worker's execution pool.
        max_concurrency: ``--autoscale``'s max.
        min_concurrency: ``--autoscale``'s min.
        worker: the worker (its app gives the broker, the consumed queues and
            the namel3ss settings).
        keepalive: seconds before a scale-down; ``None`` reads
            ``AUTOSCALE_KEEPALIVE`` (default 30).
        mutex: the lock Celery passes (a dummy one under the event loop).

    Raises:
        ConfigurationError: ``NAMEL3SS_CELERY_PROGRAM`` or ``NAMEL3SS_CELERY_POOL``
            is unset (the message names it), the pool cannot be found or does
            not scale on queue depth, the keep-alive is invalid, or there is
            no worker.
    """

    def __init__(
        self,
        pool: Any,
        max_concurrency: int,
        min_concurrency: int = 0,
        worker: Any = None,
        keepalive: float | None = None,
        mutex: Any = None,
    ) -> None:
        spec = scaling_pool(Settings.from_env() if worker is None else Settings.from_app(worker.app))
        self.rule = ScalingRule.from_pool(spec)
        self.pool_name = spec.name
        if worker is None:
            raise ConfigurationError(
                "QueueDepthAutoscaler reads the broker through its worker; Celery passes one as worker=",
                setting="worker_autoscaler",
            )
        if keepalive is None:
            keepalive = keepalive_from_env()
        elif not keepalive > 0:
            raise ConfigurationError(f"keepalive must be seconds above 0, not {keepalive!r}", setting=KEEPALIVE_ENV)
        super().__init__(pool, max_concurrency, min_concurrency, worker=worker, keepalive=keepalive, mutex=mutex)
        self.depth: int | None = None  # the last measured depth; None until measured or after a broker error
        self._wanted: int | None = None
        self._measured_at = -math.inf
        self._connection: Any = None
        self._recheck_pending = False
        if (min_concurrency, max_concurrency) != (spec.min_workers, spec.max_workers):
            logger.warning(
                "QueueDepthAutoscaler: --autoscale=%s,%s differs from pool %r's max_workers,min_workers (%s,%s); "
                "following --autoscale",
                max_concurrency,
                min_concurrency,
                spec.name,
                spec.max_workers,
                spec.min_workers,
            )

    @property
    def qty(self) -> int:
        """The process count the rule last asked for (the current count before the first measurement)."""
        return self.processes if self._wanted is None else self._wanted

    def _maybe_scale(self, req: Any = None) -> bool:
        depth = self.measure()
        if depth is None:
            return False
        procs = self.processes
        wanted = desired_processes(
            depth, procs, self.rule, min_processes=self.min_concurrency, max_processes=self.max_concurrency
        )
        self._wanted = wanted
        if wanted > procs:
            logger.info("Queue depth %s over %s process(es): scaling up to %s.", depth, procs, wanted)
            self.scale_up(wanted - procs)
            return True
        if wanted < procs:
            logger.debug("Queue depth %s over %s process(es): scaling down to %s.", depth, procs, wanted)
            self.scale_down(procs - wanted)
            return True
        return False

    def measure(self) -> int | None:
        """Messages waiting for this worker's queues (the broker's, plus prefetched); ``None`` if unreadable.

        The broker is asked at most once per ``MEASURE_INTERVAL`` (or per
        keep-alive, when shorter); in between, the last depth is returned and,
        under the worker's event loop, one more check is scheduled for when
        the interval ends (so a burst of messages is measured once it has
        landed, not a keep-alive later). A broker error is logged, the
        connection dropped, and ``None`` returned (again until the interval
        ends). Connecting is tried once, never retried, so that a broker
        that is down does not hold up the worker's event loop.
        """
        now = monotonic()
        interval = min(MEASURE_INTERVAL, self.keepalive)
        if now - self._measured_at < interval:
            if self.depth is not None:
                self._recheck_after(self._measured_at + interval - now)
            return self.depth
        self._measured_at = now
        queues = sorted(self.worker.app.amqp.queues.consume_from)
        connection = self._broker()
        try:
            connection.ensure_connection(max_retries=0)
            waiting = broker_depth(connection, queues)
        except (OperationalError, *connection.connection_errors, *connection.channel_errors, OSError) as exc:
            logger.warning(
                "QueueDepthAutoscaler: cannot read the depth of %s (%r); keeping %s process(es) this round",
                ", ".join(queues),
                exc,
                self.processes,
            )
            self.depth = None
            self.close()
            return None
        self.depth = waiting + local_backlog()
        return self.depth

    def info(self) -> dict[str, Any]:
        """Celery's autoscaler info, plus the metric, the last depth and the pool's thresholds."""
        data: dict[str, Any] = super().info()
        data.update(
            metric=str(ScalingMetric.QUEUE_DEPTH),
            pool=self.pool_name,
            depth=self.depth,
            target_value=self.rule.target_value,
            scale_up_threshold=self.rule.scale_up_threshold,
            scale_down_threshold=self.rule.scale_down_threshold,
            keepalive=self.keepalive,
        )
        return data

    def stop(self) -> None:
        """Stop the thread (when Celery runs one) and close the broker connection."""
        try:
            super().stop()
        finally:
            self.close()

    def close(self) -> None:
        """Close the broker connection; the next measurement opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()

    def _recheck_after(self, seconds: float) -> None:
        hub = getattr(self.worker, "hub", None)  # None when Celery runs the autoscaler as a thread (it polls every 1 s)
        if hub is not None and not self._recheck_pending:
            self._recheck_pending = True
            hub.call_later(max(seconds, 0.0), self._recheck)

    def _recheck(self) -> None:
        self._recheck_pending = False
        self.maybe_scale()

    def _broker(self) -> Any:
        if self._connection is None:
            self._connection = self.worker.app.connection_for_read()
        return self._connection


def _not_found(exc: BaseException) -> bool:
    """A queue that does not exist: reply code 404 (py-amqp's NotFound, kombu's virtual transports)."""
    return str(getattr(exc, "reply_code", "")) == "404"
