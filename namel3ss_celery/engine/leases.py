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

import time

from ..plan import fields
from .ports import CoordinationStore, Launching, Lease

LAUNCH_LEASE = 15.0  # seconds: a publisher that has not reported progress for this long is taken for dead
SETTLE_LEASE = 60.0  # seconds: a settle runs the block's reducer (user code), which may take a while


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
