"""The watchdog every worker runs: its heartbeat, block deadlines, and the steps of workers that died.

A block's deadline is recorded in the store when the block is launched. Each
worker looks every ``WATCH_INTERVAL`` seconds for deadlines that have passed and
decides those blocks as ``timeout`` (``Conductor.enforce_deadlines``; claims make
it idempotent across workers). So a deadline fires on time whatever became of
the process that launched the block or of the workers that run its steps,
which an ETA message a dead worker had prefetched could not promise.

Each look also finishes the launches and settles whose process died half way (their lease ran out:
``Conductor.enforce_leases``, ``engine.leases``); every ``LOST_EVERY`` looks it files the steps still
held by workers whose heartbeat ran out as lost (``Conductor.enforce_lost_workers``, ``engine.lost``),
so their blocks end, and the steps it holds itself for pool processes that have ended
(``Conductor.enforce_ended_processes``: a process killed, or recycled while it kept outcomes for a store
that was down). The worker's heartbeat is renewed every second by a thread of its own.

Its threads start after the pool's first processes are forked, and a later fork waits for their store calls
(``fork_pause``): a pool process never inherits a lock one of them held.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from ..engine.conductor import Conductor
from ..engine.lost import HEARTBEAT_TTL
from ..fork_pause import PAUSE

logger = logging.getLogger("namel3ss_celery")

# This start of the worker: its pool processes (forked from it) inherit it, and the steps they hold name it, so
# a worker restarted under the same name (a container whose new processes may reuse the old pids) knows
# which held steps belonged to processes of its earlier life.
INCARNATION = uuid.uuid4().hex[:16]

WATCH_INTERVAL = 1.0  # seconds between two looks
LOST_EVERY = 5  # looks between two searches for workers whose heartbeat ran out
QUIET_FOR = 30.0  # seconds between two log lines about the same trouble (a store that does not answer)
ENDED_GRACE = 10.0  # seconds a pool process is seen ended before its held steps are filed as lost: its worker's
# own handling (Celery's WorkerLostError, which names the signal that ended it) files them first


class Watch:
    """One worker's watchdog: a thread that beats (``beat``), and one that enforces what is due (``look``):
    deadlines, leases run out, steps of lost workers and of ended pool processes.

    The heartbeat has a thread of its own, so a look that settles a block with a slow reducer or resumes a
    large launch never lets it run out. Workers are searched for lost ones only once this worker's beats
    have reached the store for ``HEARTBEAT_TTL`` seconds in a row: after the store was away (restarted,
    unreachable), every live worker's heartbeat has run out, and each gets that long to beat again.

    Args:
        conductor: the engine, with its store.
        worker: this worker's name (its heartbeat, the steps it holds).
        interval: seconds between two beats, and between two looks.
        alive: whether a pool process of this host still exists (``process_alive``).
        clock: monotonic seconds (tests pass their own).
        incarnation: this start of the worker (``INCARNATION``).
    """

    def __init__(
        self,
        conductor: Conductor,
        worker: str,
        interval: float = WATCH_INTERVAL,
        alive: Callable[[int], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        incarnation: str = INCARNATION,
    ) -> None:
        self.conductor = conductor
        self.alive = alive or process_alive
        self.worker = worker
        self.interval = interval
        self.clock = clock
        self.incarnation = incarnation
        self.stopping = threading.Event()
        self._complained: dict[str, float] = {}
        self._looks = 0
        self._answering_since: float | None = None  # since when every beat reached the store
        self._ended_since: dict[int, float] = {}  # pool processes seen ended, and since when
        self._asked: set[int] = set()  # the processes the last search asked about

    def run(self) -> None:
        """Beat and look until ``stopping`` is set (the heartbeat in a thread of its own)."""
        self.conductor.home.broker()  # worked out (its host looked up) once, here, outside PAUSE
        threading.Thread(target=self._beat_until_stopped, name="namel3ss-heartbeat", daemon=True).start()
        self.look()
        while not self.stopping.wait(self.interval):
            self.look()

    def _beat_until_stopped(self) -> None:
        self.beat()
        while not self.stopping.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Renew this worker's heartbeat; a store that does not answer is logged, and the next beat tries again."""
        try:
            with PAUSE.call():
                self.conductor.store.beat(self.worker, HEARTBEAT_TTL, self.conductor.home.broker())
        except Exception as exc:  # noqa: BLE001 - a watchdog outlives a store outage
            self._answering_since = None
            self._complain("the watchdog cannot renew this worker's heartbeat now (it tries again)", exc)
        else:
            if self._answering_since is None:
                self._answering_since = self.clock()

    def look(self) -> None:
        """Enforce what is due; each kind on its own, so trouble with one (logged) does not hold the others."""
        self._enforce("block deadlines", self.conductor.enforce_deadlines)
        self._enforce("leases", self.conductor.enforce_leases)
        self._looks += 1
        if self._looks % LOST_EVERY == 0:
            since = self._answering_since
            if since is not None and self.clock() - since >= HEARTBEAT_TTL:
                self._enforce("the steps of lost workers", self.conductor.enforce_lost_workers)
            self._asked.clear()
            self._enforce(
                "the steps of ended processes",
                lambda: self.conductor.enforce_ended_processes(self.worker, self._counts_alive, self.incarnation),
            )
            # forget processes no held step names any more: a pid used again starts its grace afresh
            self._ended_since = {pid: at for pid, at in self._ended_since.items() if pid in self._asked}

    def _counts_alive(self, pid: int) -> bool:
        """Whether pool process ``pid`` counts as alive: it is, or it ended less than ``ENDED_GRACE`` ago."""
        self._asked.add(pid)
        if self.alive(pid):
            self._ended_since.pop(pid, None)
            return True
        now = self.clock()
        return now - self._ended_since.setdefault(pid, now) < ENDED_GRACE

    def _enforce(self, what: str, call: Callable[[], object]) -> None:
        try:
            with PAUSE.call():
                call()
        except Exception as exc:  # noqa: BLE001 - the next look tries again
            self._complain(f"the watchdog cannot enforce {what} now (it tries again)", exc)

    def _complain(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._complained.get(what, -QUIET_FOR) >= QUIET_FOR:
            self._complained[what] = now
            logger.warning("%s: %s", what, exc)


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
        requires = ("celery.worker.components:Pool",)  # its threads start once the pool's processes are forked

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
