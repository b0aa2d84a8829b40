"""Whose work a watchdog does: the runs of its own broker, and another broker's when none of its workers lives.

A watchdog finishes what a dead process left (a launch, a settle, a deadline, the steps of a lost worker)
and sends the messages that follow through its own broker. A run records the broker it was dispatched
through (``fields.BROKER``, ``apps.broker_identity``), and each worker's heartbeat names its broker. When
two deployments share one coordination store database, a watchdog leaves another broker's overdue work to
that broker's live workers (they look every second), and does it itself only if none lives, or if they
leave it undone for ``FOREIGN_GRACE`` seconds: a run never waits for ever for nobody. A dispatcher that names
the same broker differently (another node of a cluster) has no live worker under that name, so its runs'
work is done at once, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..plan import fields
from .ports import CoordinationStore

logger = logging.getLogger("namel3ss_celery")

Takes = Callable[[str, str], bool]  # (run id, the overdue work): whether to do it now (Home.takes)

FOREIGN_GRACE = 60.0  # seconds another broker's overdue work is left to that broker's live workers
LIVE_FOR = 1.0  # seconds the brokers of live workers are read for (a watchdog looks once a second)


class Home:
    """Which overdue work this process takes now (``takes``), for a worker whose broker is ``broker``.

    Args:
        store: the coordination store (where each run and each heartbeat says its broker).
        broker: this process's ``apps.broker_identity`` ("" takes every run's work at once).
        grace: seconds before another broker's overdue work is taken though its workers live.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        store: Callable[[], CoordinationStore],
        broker: Callable[[], str],
        grace: float = FOREIGN_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._broker_of = broker
        self._broker: str | None = None
        self.grace = grace
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}  # (run, work): when this process first left it
        self._live: tuple[float, set[str]] = (float("-inf"), set())  # when read, the brokers of live workers
        self._lock = threading.Lock()

    def takes(self, run_id: str, work: str) -> bool:
        """Whether to do ``work`` (a block's name, or a held step) of run ``run_id`` now: at once for a run of
        this broker, one that does not say (dispatched by an earlier release), or one whose broker has no
        live worker; else once this process has seen it left undone for ``grace`` seconds."""
        mine = self.broker()
        theirs = self._store().get_fields(run_id, [fields.BROKER])[0] if mine else None
        if not theirs or not mine or theirs == mine or theirs not in self._live_brokers():
            with self._lock:
                self._seen.pop((run_id, work), None)
            return True
        now = self.clock()
        with self._lock:
            self._forget_before(now - 10 * self.grace)
            first = self._seen.setdefault((run_id, work), now)
            if now - first < self.grace:
                if first == now:
                    logger.info("run %s went through %s, not %s: left to its workers", run_id, theirs, mine)
                return False
            del self._seen[(run_id, work)]
        logger.warning(
            "run %s went through %s, whose workers left %s undone for %gs: a worker of %s does it",
            run_id,
            theirs,
            work,
            self.grace,
            mine,
        )
        return True

    def broker(self) -> str:
        """This process's broker, worked out once (its host looked up the first time)."""
        if self._broker is None:
            self._broker = self._broker_of()
        return self._broker

    def _live_brokers(self) -> set[str]:
        now = self.clock()
        read_at, brokers = self._live
        if now - read_at >= LIVE_FOR:
            brokers = self._store().live_brokers()
            self._live = (now, brokers)
        return brokers

    def _forget_before(self, when: float) -> None:
        """Drop what was left long ago (its own workers did it, or the run expired): it is not seen again."""
        for key in [k for k, first in self._seen.items() if first < when]:
            del self._seen[key]


def everywhere(run_id: str, work: str) -> bool:
    """Take every run's work at once (a process with no broker of its own: the local executor)."""
    return True
