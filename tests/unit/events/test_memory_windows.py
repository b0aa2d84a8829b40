"""The embedded default's event store keeps its claims and windows in memory: those that ended are dropped as
they pile up, as Redis drops its keys at their TTL, and those still open stay."""

from __future__ import annotations

from namel3ss_celery.events.stream import SWEEP_AT, MemoryEventStore


def test_windows_that_ended_are_dropped_and_open_ones_kept() -> None:
    store = MemoryEventStore()
    assert store.claim("open", 3600)
    for n in range(3 * SWEEP_AT):  # every matched event claims once per trigger: ended at once here
        assert store.claim(f"ended-{n}", 1e-9)
    assert len(store._windows) <= SWEEP_AT + 1
    assert not store.claim("open", 3600)  # still held
    assert store.count("open-count", 3600) == 1 and store.count("open-count", 3600) == 2
