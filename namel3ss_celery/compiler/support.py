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
    for index, queue in enumerate(program.task_queues):
        refuse_non_defaults(queue, QUEUE_NOT_YET, f"task_queues[{index}]")
        delivery_options(queue)  # exactly_once is refused, saying why and what to use
