"""Closed sets of a run's vocabulary: how a block joins, and what happened to a step of a decided block."""

from __future__ import annotations

from ..spec.enums import StrEnum


class Join(StrEnum):
    """How a block's steps are joined."""

    CHORD = "chord"  # Celery's chord: the result backend counts, its body settles
    COUNT = "count"  # the adapter's counted join: the last step to file settles


class Outcome(StrEnum):
    """What happened to a step of a decided block (``metadata["outcome"]``)."""

    WON = "won"  # it decided the block
    NOT_STARTED = "not_started"  # it never began: its block was decided first
    STOPPED = "stopped"  # it was running, and stopped when asked (or was terminated)
    RAN_TO_END = "ran_to_end"  # it was running, and finished anyway
    STOPPING = "stopping"  # asked to stop, not reported yet (the result is rewritten when it reports)
