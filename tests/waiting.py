"""Waiting in tests for a condition, never for a time: bounded polls that say what did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(what: Callable[[], bool], seconds: float, every: float = 0.5) -> float | None:
    """Seconds until ``what()`` held, or None if it did not within ``seconds`` (it is asked once more at the end)."""
    began = time.monotonic()
    while True:
        if what():
            return time.monotonic() - began
        if time.monotonic() - began >= seconds:
            return None
        time.sleep(every)


def wait_until(
    what: Callable[[], bool], seconds: float, failure: str | Callable[[], str], every: float = 0.05
) -> float:
    """Seconds until ``what()`` held; an ``AssertionError`` naming ``failure`` when it did not within ``seconds``.

    ``failure`` is the message, or a function that makes it when the wait fails (a worker's log, say).
    """
    waited = poll(what, seconds, every)
    if waited is None:
        raise AssertionError(f"not within {seconds:g}s: {failure() if callable(failure) else failure}")
    return waited
