"""Where a ``sync`` trigger's emitter waits (``execution``): which of its triggers it waits for, refused inside a
worker, then the worker's answer (the runs it started) and those runs, each within its trigger's seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import current_task
from celery.exceptions import TimeoutError as CeleryTimeout

from ..engine.runner import current_step
from ..errors import ConfigurationError, EventNotMatched
from .matching import MAX_DEPTH, Trigger, matching
from .model import Event
from .triggering import dropped

MATCH_POLL = 0.02  # seconds between looks for the match task's answer, in the embedded default's cache


def in_worker() -> bool:
    """Whether this code runs inside a step or a Celery task (of a worker, or eager), where waiting for a run
    can deadlock."""
    return current_step() is not None or bool(current_task)


def waited_triggers(triggers: list[Trigger], event: Event) -> dict[str, float]:
    """The ``sync`` triggers among ``triggers`` that match ``event``, each with the seconds its run is waited
    for (none at the depth limit, where nothing starts).

    Raises:
        ConfigurationError: some match, and this code runs inside a step or a Celery task, where waiting may
            deadlock (raised before anything is published).
    """
    synced = [t for t in triggers if t.wait_seconds is not None]
    if not synced or int(event.metadata.get("depth", 0)) >= MAX_DEPTH:
        return {}
    waited = {t.spec.name: float(t.wait_seconds) for t in matching(synced, event) if t.wait_seconds is not None}
    if waited and in_worker():
        raise ConfigurationError(
            f"trigger {min(waited)!r} has execution_mode 'sync': emitting its event waits for the run, and "
            "this code runs inside a step or a Celery task, where waiting can deadlock; emit it from "
            "outside a worker, or make the trigger 'async' or 'background'",
            setting="execution_mode",
        )
    return waited


def wait_matched(sent: Any, event_id: str, waited: dict[str, float], run: Callable[[str], Any]) -> dict[str, Any]:
    """Wait for the worker that matches event ``event_id`` (``sent``: its match task) to answer with what its
    ``waited`` triggers did, for as long as the longest of them waits, then for the runs they started
    (``run``: a handle by id), each within its own trigger's seconds counted from the start; their
    results, by trigger. A trigger that started no run (a duplicate, rate-limited, ...) has none.

    Raises:
        EventNotMatched: no worker answered in time (the match task waits in the broker).
        ConfigurationError: the worker's program has no such trigger, or it does not match the event there
            (the worker and this process run different programs).
        WaitTimeout: a run did not end in time (it goes on).
        Exception: what the match task raised on the worker.
    """
    timeout, started = max(waited.values()), time.monotonic()
    try:
        # By trigger: a run id, or why none started. The embedded default's in-memory cache is polled every
        # MATCH_POLL seconds rather than Celery's 0.5 (a backend that pushes results, Redis, is not polled).
        in_memory = getattr(sent.backend, "backend", None) == "memory"
        outcomes = dict(sent.get(timeout=timeout, propagate=True, interval=MATCH_POLL if in_memory else 0.5))
    except CeleryTimeout as exc:
        raise EventNotMatched(event_id, sorted(waited), timeout) from exc
    missing = sorted(set(waited) - set(outcomes))
    if missing:
        raise ConfigurationError(
            f"event {event_id}: the worker that matched it found no trigger {missing[0]!r} that matches it, so no "
            "run was started for this process to wait for; the worker's program (NAMEL3SS_CELERY_PROGRAM) is not "
            "this process's: deploy one program version everywhere",
            setting="NAMEL3SS_CELERY_PROGRAM",
        )
    spent = time.monotonic() - started
    return wait_for(
        [
            (name, waited[name] - spent, run(outcome))
            for name, outcome in outcomes.items()
            if name in waited and not dropped(outcome)
        ]
    )


def wait_for(runs: Sequence[tuple[str, float, Any]]) -> dict[str, Any]:
    """Wait for each of ``runs`` (trigger, timeout in seconds, run handle) to end, each within its timeout
    counted from now; their results, by trigger.

    Raises:
        WaitTimeout: a run did not end in time (it goes on).
    """
    started = time.monotonic()
    return {
        name: handle.get(timeout=max(0.0, timeout - (time.monotonic() - started))) for name, timeout, handle in runs
    }
