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
from collections.abc import Mapping
from time import monotonic
from typing import Any

from celery.utils.log import get_logger
from celery.worker.autoscale import Autoscaler
from kombu.exceptions import OperationalError

from ..errors import ConfigurationError, RoutingError, SpecError
from ..settings import ENV_KEYS, Settings
from ..spec import ScalingMetric, WorkerPoolSpec, load_program
from .queue_depth import broker_depth, local_backlog
from .scaling import ScalingRule, desired_processes
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
