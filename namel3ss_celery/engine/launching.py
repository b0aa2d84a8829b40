"""A launch that can resume: how far publishing a node's steps got, so a launch delivered again sends the rest.

The launch task (``n3.run.launch``) is acknowledged late: when the worker
publishing a large block dies, the broker delivers the launch again (at once
on RabbitMQ; on Redis once its visibility timeout passes). Meanwhile its
progress is in the run's record: how many step messages the broker surely has
(after each batch), the chord group they joined, and a lease the publisher
renews as it goes. The launch delivered again sends the remaining messages in
the same group; only the batch in flight when the publisher died can be sent
twice (a step whose block it belongs to already heard from it never starts
again, see ``docs/reliability.md``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..plan import fields
from .ports import CoordinationStore, Launching

LEASE_SECONDS = 15.0  # a publisher that has not reported progress for this long is taken for dead


def tracked(store: CoordinationStore, run_id: str, node: str, start: int, group_id: str | None) -> Launching:
    """A launch whose progress is kept in the run's record, with its lease renewed at each report."""

    def sent(count: int) -> None:
        store.set_fields(
            run_id, {fields.published(node): str(count), fields.launch_lease(node): repr(time.time() + LEASE_SECONDS)}
        )

    def remember_group(group_id: str) -> None:
        store.set_fields(run_id, {fields.chord_group(node): group_id})

    return Launching(start, group_id, remember_group, sent)


def begin(store: CoordinationStore, run_id: str, node: str) -> None:
    """A tracked launch starts: nothing sent yet, the lease held."""
    store.set_fields(
        run_id, {fields.published(node): "0", fields.launch_lease(node): repr(time.time() + LEASE_SECONDS)}
    )


@dataclass(frozen=True)
class Unfinished:
    """A root node whose launch was claimed but not finished: resume it from ``start``, or wait ``wait`` s."""

    start: int
    group_id: str | None
    wait: float  # > 0: its publisher may still be at work


def unfinished(record: Mapping[str, str], node: str, total: int, now: float) -> Unfinished | None:
    """What a launch delivered again finds of ``node``'s publishing; ``None`` when there is nothing to do
    (it settled, it was published whole, or it was not a tracked launch)."""
    if fields.settled(node) in record or fields.published(node) not in record:
        return None
    start = int(record[fields.published(node)])
    if start >= total:
        return None
    lease = float(record.get(fields.launch_lease(node)) or 0.0)
    return Unfinished(start, record.get(fields.chord_group(node)), max(0.0, lease - now))
