"""Riding out a store that restarts: a call the run cannot do without is tried again, for a bounded time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import StoreUnavailable

logger = logging.getLogger("namel3ss_celery")

PATIENCE = 60.0  # seconds a step waits for the store to come back before it fails
FIRST_DELAY = 0.1
MAX_DELAY = 5.0

T = TypeVar("T")


def patiently(
    call: Callable[[], T],
    what: str,
    patience: float = PATIENCE,
    away: tuple[type[BaseException], ...] = (StoreUnavailable,),
) -> T:
    """``call()``, tried again with backoff while the store does not answer (it raises one of ``away``), for
    up to ``patience`` seconds.

    Raises:
        StoreUnavailable: the store did not come back in time (or what else of ``away`` it raised).
    """
    deadline = time.monotonic() + patience
    delay = FIRST_DELAY
    while True:
        try:
            return call()
        except away as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: the store does not answer (%s); trying again in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
