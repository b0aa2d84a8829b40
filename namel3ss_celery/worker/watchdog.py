"""The watchdog every worker runs: its heartbeat, block deadlines, and the steps of workers that died.

A block's deadline is recorded in the store when the block is launched. Each
worker looks every ``WATCH_INTERVAL`` seconds for deadlines that have passed and
decides those blocks as ``timeout`` (``Conductor.enforce_deadlines``; claims make
it idempotent across workers). So a deadline fires on time whatever became of
the process that launched the block or of the workers that run its steps,
which an ETA message a dead worker had prefetched could not promise.

Each look also renews the worker's heartbeat and finishes the launches and
settles whose process died half way (their lease ran out: ``Conductor.enforce_leases``,
``engine.leases``); every ``LOST_EVERY`` looks it files the steps still held by
workers whose heartbeat ran out as lost (``Conductor.enforce_lost_workers``,
``engine.lost``), so their blocks end, and the steps it holds itself for pool processes that have ended
(``Conductor.enforce_ended_processes``: a process killed, or recycled while it kept outcomes for a store
that was down).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from ..engine.conductor import Conductor
from ..engine.lost import HEARTBEAT_TTL

logger = logging.getLogger("namel3ss_celery")

WATCH_INTERVAL = 1.0  # seconds between two looks
LOST_EVERY = 5  # looks between two searches for workers whose heartbeat ran out
QUIET_FOR = 30.0  # seconds between two log lines about the same trouble (a store that does not answer)


class Watch:
    """The loop of one worker's watchdog thread: its heartbeat, deadlines due, leases run out, steps of lost
    workers."""

    def __init__(
        self,
        conductor: Conductor,
        worker: str,
        interval: float = WATCH_INTERVAL,
        alive: Callable[[int], bool] | None = None,
    ) -> None:
        self.conductor = conductor
        self.alive = alive or process_alive
        self.worker = worker
        self.interval = interval
        self.stopping = threading.Event()
        self._complained = 0.0
        self._looks = 0

    def run(self) -> None:
        self.look()
        while not self.stopping.wait(self.interval):
            self.look()

    def look(self) -> None:
        """Beat, enforce what is due; trouble (the store is away) is logged, and the next look tries again."""
        try:
            self.conductor.store.beat(self.worker, HEARTBEAT_TTL)
            self.conductor.enforce_deadlines()
            self.conductor.enforce_leases()
            self._looks += 1
            if self._looks % LOST_EVERY == 0:
                self.conductor.enforce_lost_workers()
                self.conductor.enforce_ended_processes(self.worker, self.alive)
        except Exception as exc:  # noqa: BLE001 - a watchdog outlives a store outage
            now = time.monotonic()
            if now - self._complained >= QUIET_FOR:
                self._complained = now
                logger.warning("the watchdog cannot enforce block deadlines now (it tries again): %s", exc)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except (OverflowError, ValueError):
        return True  # not a process id: nothing to say it ended
    return True


def add_watchdog(app: Any, conductor: Conductor) -> None:
    """Run a watchdog thread in every worker of ``app`` (its main process), from start to shutdown."""

    class Watchdog(bootsteps.StartStopStep):  # type: ignore[misc]
        name = "namel3ss_celery.Watchdog"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            self.watch = Watch(conductor, parent.hostname)
            self.thread: threading.Thread | None = None
            super().__init__(parent, **kwargs)

        def start(self, parent: Any) -> None:
            self.thread = threading.Thread(target=self.watch.run, name="namel3ss-watchdog", daemon=True)
            self.thread.start()

        def stop(self, parent: Any) -> None:
            self.watch.stopping.set()
            if self.thread is not None:
                self.thread.join(timeout=self.watch.interval * 2)

    app.steps["worker"].add(Watchdog)
