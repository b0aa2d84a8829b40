"""Step signatures: one ``n3.step.<target>`` message per step, carrying the schema-versioned payload."""

from __future__ import annotations

from typing import Any

from celery import canvas

from ..registry import STEP_TASK_PREFIX
from ..spec import ParallelBlockSpec, step_key
from ..worker.runner import SCHEMA_VERSION


def step_payload(
    block: ParallelBlockSpec, index: int, run_id: str, node: str, context: dict[str, Any], join: str
) -> dict[str, Any]:
    """The message body a step task receives (schema version ``SCHEMA_VERSION``)."""
    step = block.steps[index]
    return {
        "v": SCHEMA_VERSION,
        "run": run_id,
        "node": node,
        "i": index,
        "n": len(block.steps),
        "key": step_key(step, index),
        "join": join,
        "step": step.payload(),
        "context": context,
    }


def step_signatures(
    app: Any, block: ParallelBlockSpec, run_id: str, node: str, context: dict[str, Any], join: str
) -> list[canvas.Signature]:
    """One immutable signature per step, named after its target."""
    return [
        app.signature(
            STEP_TASK_PREFIX + str(step.target),
            args=(step_payload(block, index, run_id, node, context, join),),
            immutable=True,
        )
        for index, step in enumerate(block.steps)
    ]
