"""What this release runs, checked before anything is published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotSupportedYet
from ..routing.policy import delivery_options
from ..spec import ParallelBlockSpec, ProgramSpec

# Block fields whose behaviour is not built yet: refused when set to anything but the IR default.
NOT_YET: dict[str, Callable[[Any], bool]] = {
    "output_key": lambda v: v is None,
    "required_permission_level": lambda v: v is None,
    "allowed_capabilities": lambda v: v == [],
}


def check_supported(block: ParallelBlockSpec, path: str) -> None:
    """Raise ``NotSupportedYet`` naming the first field this release cannot honour."""
    refuse_non_defaults(block, NOT_YET, path)


def refuse_non_defaults(spec: Any, fields: dict[str, Callable[[Any], bool]], path: str) -> None:
    """Raise ``NotSupportedYet`` for the first of ``fields`` whose value is not its IR default."""
    for name, is_default in fields.items():
        if not is_default(getattr(spec, name)):
            raise NotSupportedYet(f"{name} is not supported yet; leave it unset", path=f"{path}.{name}")


# Program sections whose behaviour is not built yet: a program that declares them is refused.
PROGRAM_NOT_YET: tuple[str, ...] = ()
# The trigger types that run (the others are refused, naming the trigger).
TRIGGER_TYPES_BUILT: frozenset[str] = frozenset(
    {
        "task_completed",
        "task_failed",
        "workflow_started",
        "workflow_completed",
        "user_input",
        "system_alert",
        "custom",
        "webhook",
        "message",
        "dataset_change",
        "manual",
        "schedule",
    }
)

# Task queue fields whose behaviour is not built yet: refused when set to anything but the IR default.
QUEUE_NOT_YET: dict[str, Callable[[Any], bool]] = {
    "redis_config": lambda v: v == {},
    "rabbitmq_config": lambda v: v == {},
    "external_config": lambda v: v == {},
    "enable_metrics": lambda v: v is True,
    "metric_tags": lambda v: v == {},
}


def check_program_supported(program: ProgramSpec) -> None:
    """Raise ``NotSupportedYet`` for a program section this release would otherwise ignore."""
    for name in PROGRAM_NOT_YET:
        if getattr(program, name):
            raise NotSupportedYet(f"{name} are not supported yet; remove them to run this program", path=name)
    for index, trigger in enumerate(program.event_triggers):
        if trigger.event_type not in TRIGGER_TYPES_BUILT:
            raise NotSupportedYet(
                f"trigger {trigger.name!r}: event_type {trigger.event_type!r} is not supported yet (built: "
                f"{', '.join(sorted(TRIGGER_TYPES_BUILT)) or 'none'}); remove it to run this program",
                path=f"event_triggers[{index}].event_type",
            )
    for index, queue in enumerate(program.task_queues):
        refuse_non_defaults(queue, QUEUE_NOT_YET, f"task_queues[{index}]")
        delivery_options(queue)  # exactly_once is refused, saying why and what to use
