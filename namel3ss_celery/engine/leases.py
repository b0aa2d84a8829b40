"""Leases: a launch or a settle whose process died half way is finished by another.

Launching a block (publishing its steps) and settling one (filing its result, then launching what it
unblocked or ending the run) are each several writes and messages, and the process doing it can die
between two. So whoever claims the work also takes a lease on it in the store (``n3:leases``, scored by
when it runs out; the same atomic write as the claim), renews it as it goes and drops it when done. A
lease that runs out means its holder died: each worker's watchdog looks for those every second, one of
them takes the lease over and finishes the work (``Conductor.resume``) from what the run's record says
was done:

- a block being launched: how many of its messages the broker surely has (``published``, written after
  each batch) and in which chord group; the rest is sent. Only the batch in flight when its publisher
  died can be sent twice (a step of a block that already heard from it never starts again, see
  ``docs/reliability.md``);
- a block being settled: its result is filed and the run moves on, or it is settled again. Launching
  the next blocks and ending the run are claims, so nothing happens twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import StoreUnavailable, UnknownRun
from ..fork_pause import PAUSE
from ..plan import fields
from .ports import CoordinationStore, Launching, Lease

logger = logging.getLogger("namel3ss_celery")

LAUNCH_LEASE = 15.0  # seconds: a publisher that has not reported progress for this long is taken for dead
SETTLE_LEASE = 60.0  # seconds: a settle runs the block's reducer (user code), which may take a while
RENEW_EVERY = 5.0  # seconds between renewals of the leases a process holds while it works


def launch_lease(node: str) -> Lease:
    """The lease of whoever claims launching ``node`` now."""
    return Lease(node, time.time() + LAUNCH_LEASE)


def settle_lease(node: str) -> Lease:
    """The lease of whoever claims settling ``node`` now."""
    return Lease(node, time.time() + SETTLE_LEASE)


def tracked(
    store: CoordinationStore, run_id: str, node: str, total: int, start: int, group_id: str | None
) -> Launching:
    """Publishing ``node``'s ``total`` first messages from ``start``: each batch the broker has is written to
    the run's record and renews the lease (the last needs neither: the lease is dropped next)."""

    def sent(count: int) -> None:
        if count < total:
            store.set_fields(run_id, {fields.published(node): str(count)})
            store.renew_lease(run_id, node, time.time() + LAUNCH_LEASE)

    def remember_group(group_id: str) -> None:
        store.set_fields(run_id, {fields.chord_group(node): group_id})

    return Launching(start, group_id, remember_group, sent)


class LeaseKeeper:
    """Renews the leases this process holds, while it holds them: a settle whose reducer runs for minutes,
    or a launch whose one batch the broker takes long to accept, is slow, not dead. One thread per process,
    started on first use (and again in a forked child), renewing every ``RENEW_EVERY`` seconds; what dies
    with the process stops being renewed, so its lease runs out as before."""

    def __init__(self, store: Callable[[], CoordinationStore]) -> None:
        self._store = store
        self._held: dict[tuple[str, str], float] = {}  # (run, node): the lease's length in seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, run_id: str, node: str, seconds: float) -> None:
        """Renew the lease on ``node`` of ``run_id`` (``seconds`` long) until ``let_go``."""
        with self._lock:
            self._held[(run_id, node)] = seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._renew, name="n3-leases", daemon=True)
                self._thread.start()

    def let_go(self, run_id: str, node: str) -> None:
        """Stop renewing that lease (the work is done, or failed: then the lease runs out for a watchdog)."""
        with self._lock:
            self._held.pop((run_id, node), None)

    @contextmanager
    def holding(self, run_id: str, node: str, seconds: float) -> Iterator[None]:
        """``hold`` while the block runs, whatever it raises."""
        self.hold(run_id, node, seconds)
        try:
            yield
        finally:
            self.let_go(run_id, node)

    def held(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._held)

    def renew_now(self) -> None:
        """Renew every lease held now (the thread does this every ``RENEW_EVERY`` seconds)."""
        with self._lock:
            held = list(self._held.items())
        for (run_id, node), seconds in held:
            try:
                with PAUSE.call():  # a fork of this process waits for it
                    self._store().renew_lease(run_id, node, time.time() + seconds)
            except (StoreUnavailable, UnknownRun) as exc:  # the next round tries again; a gone run needs none
                logger.warning("could not renew the lease on block %s of run %s: %s", node, run_id, exc)

    def _renew(self) -> None:
        while True:
            time.sleep(RENEW_EVERY)
            self.renew_now()
