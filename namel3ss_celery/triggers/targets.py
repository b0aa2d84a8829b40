"""What a trigger starts: its ``trigger_target``, a workflow or a parallel block of its program."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events.targets import check_targets, target_program
from ..extension import Namel3ssCelery
from ..runs import RunHandle
from ..spec import EventTriggerSpec, ProgramSpec

__all__ = ["check_targets", "dispatch_trigger", "target_program"]


def dispatch_trigger(
    n3: Namel3ssCelery, program: ProgramSpec, trigger: EventTriggerSpec, context: Mapping[str, Any] | None = None
) -> RunHandle:
    """Start what ``trigger`` names, with ``context``; its handle."""
    spec, workflow = target_program(program, trigger)
    return n3.dispatch(spec, context, workflow=workflow)
