"""What this release runs, checked before anything is published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotSupportedYet
from ..routing.policy import delivery_options
from ..spec import ParallelBlockSpec, ParallelStrategy, ProgramSpec

SUPPORTED_STRATEGIES = tuple(ParallelStrategy)

# Block fields whose behaviour is not built yet: refused when set to anything but the IR default.
NOT_YET: dict[str, Callable[[Any], bool]] = {
    "output_key": lambda v: v is None,
    "required_permission_level": lambda v: v is None,
    "allowed_capabilities": lambda v: v == [],
}

STEP_NOT_YET: tuple[str, ...] = ()


def check_supported(block: ParallelBlockSpec, path: str) -> None:
    """Raise ``NotSupportedYet`` naming the first field this release cannot honour."""
    if block.strategy not in SUPPORTED_STRATEGIES:
        raise NotSupportedYet(
            f"strategy {str(block.strategy)!r} is not supported yet (supported: "
            f"{', '.join(str(s) for s in SUPPORTED_STRATEGIES)})",
            path=f"{path}.strategy",
        )
    for name, is_default in NOT_YET.items():
        if not is_default(getattr(block, name)):
            raise NotSupportedYet(f"{name} is not supported yet; leave it unset", path=f"{path}.{name}")
    for index, step in enumerate(block.steps):
        for name in STEP_NOT_YET:
            if getattr(step, name) is not None:
                raise NotSupportedYet(f"{name} on a step is not supported yet", path=f"{path}.steps[{index}].{name}")


# Program sections whose behaviour is not built yet: a program that declares them is refused.
PROGRAM_NOT_YET = ("distributed_configs", "event_triggers", "event_handlers")

# Task queue fields whose behaviour is not built yet: refused when set to anything but the IR default.
QUEUE_NOT_YET: dict[str, Callable[[Any], bool]] = {
    "dead_letter_queue": lambda v: v is None,
    "message_retention": lambda v: v == 86400.0,
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
    for index, queue in enumerate(program.task_queues):
        for name, is_default in QUEUE_NOT_YET.items():
            if not is_default(getattr(queue, name)):
                raise NotSupportedYet(
                    f"{name} is not supported yet; leave it unset", path=f"task_queues[{index}].{name}"
                )
        delivery_options(queue)  # exactly_once is refused, saying why and what to use
