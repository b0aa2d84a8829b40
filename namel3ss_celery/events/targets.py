"""What a trigger starts: its ``trigger_target``, a workflow or a parallel block of its program."""

from __future__ import annotations

from ..errors import SpecError
from ..routing.queues import MIN_PRIORITY
from ..spec import EventTriggerSpec, ProgramSpec
from ..spec.enums import ExecutionMode


def check_targets(program: ProgramSpec) -> None:
    """Every trigger names a workflow or a block of the program.

    Raises:
        SpecError: naming the trigger's ``trigger_target`` and what the program has.
    """
    workflows = {w.name for w in program.workflows}
    blocks = {b.name for b in program.parallel_blocks}
    for index, trigger in enumerate(program.event_triggers):
        if trigger.trigger_target not in workflows | blocks:
            raise SpecError(
                f"trigger {trigger.name!r} starts {trigger.trigger_target!r}, which is neither a workflow "
                f"({', '.join(sorted(workflows)) or 'none'}) nor a parallel block "
                f"({', '.join(sorted(blocks)) or 'none'}) of the program",
                path=f"event_triggers[{index}].trigger_target",
            )


def target_program(program: ProgramSpec, trigger: EventTriggerSpec) -> tuple[ProgramSpec, str | None]:
    """What to dispatch for ``trigger`` (see ``program_for``; ``background_program`` for a ``background``
    trigger)."""
    spec, workflow = program_for(program, trigger.trigger_target)
    return (background_program(spec) if trigger.execution_mode == ExecutionMode.BACKGROUND else spec), workflow


def program_for(program: ProgramSpec, target: str) -> tuple[ProgramSpec, str | None]:
    """What to dispatch to start ``target``: the program and that workflow, or a program of the one block,
    named like it (with the program's pools and queues, so its steps go where the program routes them)."""
    if any(w.name == target for w in program.workflows):
        return program, target
    (block,) = [b for b in program.parallel_blocks if b.name == target]
    alone = block.model_copy(update={"depends_on": []})
    alone_program = {"name": block.name, "parallel_blocks": [alone], "workflows": [], "event_triggers": []}
    return program.model_copy(update=alone_program | {"event_handlers": []}), None


def background_program(program: ProgramSpec) -> ProgramSpec:
    """``program`` with every step that sets no ``priority`` of its own on the lowest (``MIN_PRIORITY``), in
    its blocks and its workflows' step nodes: what a ``background`` trigger starts. (The steps a ``fan_out``
    makes when its block starts keep the default.)"""
    blocks = [
        block.model_copy(
            update={
                "steps": [
                    step if step.priority is not None else step.model_copy(update={"priority": MIN_PRIORITY})
                    for step in block.steps
                ]
            }
        )
        for block in program.parallel_blocks
    ]
    workflows = [
        workflow.model_copy(
            update={
                "steps": [
                    node
                    if node.target is None or (node.model_extra or {}).get("priority") is not None
                    else node.model_copy(update={"priority": MIN_PRIORITY})
                    for node in workflow.steps
                ]
            }
        )
        for workflow in program.workflows
    ]
    return program.model_copy(update={"parallel_blocks": blocks, "workflows": workflows})
