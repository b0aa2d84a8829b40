"""A node as it runs: its fan-out expanded, its context, and a failed result for one that cannot run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..errors import DecodeError
from ..plan import fields
from ..plan.model import PlanNode
from ..registry import Registry
from ..results import ParallelExecutionResult, RunStatus
from ..spec import ParallelBlockSpec, expand_fan_out
from .decide import Decision
from .settle import settle_block


def broken(node: PlanNode, reason: str, registry: Registry) -> ParallelExecutionResult:
    """A failed result for a block the adapter itself could not start or settle."""
    return settle_block(
        node.block.model_copy(update={"steps": []}), {}, registry, decision=Decision(RunStatus.FAILED, None, reason)
    )


def with_fan_out(node: PlanNode, context: dict[str, Any]) -> PlanNode:
    """The node with its fan-out expanded into steps over ``context`` (the node itself without one)."""
    if node.block.fan_out is None:
        return node
    return replace(node, block=expand_fan_out(node.block, context))


def launched(node: PlanNode, record: Mapping[str, str]) -> PlanNode:
    """A node as it was launched: with the steps its fan-out made, filed in the run record."""
    expanded = record.get(fields.expanded_block(node.name))
    return replace(node, block=ParallelBlockSpec.model_validate_json(expanded)) if expanded else node


def node_context(record: Mapping[str, str], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's context with the outputs of the nodes finished so far under ``"outputs"``.

    Raises:
        DecodeError: the recorded context is not a mapping, or its ``outputs`` is not one (``dispatch``
            refuses both, so only a record written otherwise has them).
    """
    context = json.loads(record.get(fields.CONTEXT) or "{}")
    if not isinstance(context, dict):
        raise DecodeError(f"the run's recorded context is {type(context).__name__}, not a mapping")
    given = context.get("outputs", {})
    if not isinstance(given, dict):
        raise DecodeError(f"the run's recorded context.outputs is {type(given).__name__}, not a mapping")
    return {**context, "outputs": {**given, **outputs}}
