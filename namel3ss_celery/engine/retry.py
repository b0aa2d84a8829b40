"""When a failed step is tried again: one rule for Celery workers and the local executor."""

from __future__ import annotations

from collections.abc import Callable

from ..plan.message import StepMessage
from ..results import TaskStatus

RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


def retry_delay(retries: int) -> float:
    """Exponential backoff for a block's ``retry_failed``: 0.5 s, 1 s, 2 s, ... capped at 30 s."""
    return float(min(RETRY_BASE_SECONDS * 2**retries, RETRY_MAX_SECONDS))


def retry_countdown(
    message: StepMessage, status: TaskStatus, attempt: int, stopping: Callable[[], bool]
) -> float | None:
    """Seconds before the next try of a step whose try number ``attempt`` (0 first) ended ``status``;
    ``None`` when it is not tried again (it did not fail, its retries are spent, or its block is stopping).

    The delays are its task queue's (``countdowns``) when its pool has one, else the block's backoff.
    """
    if status != TaskStatus.FAILED or attempt >= message.retries or stopping():
        return None
    countdowns = message.countdowns or ()
    return countdowns[attempt] if attempt < len(countdowns) else retry_delay(attempt)
