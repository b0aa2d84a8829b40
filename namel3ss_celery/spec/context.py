"""The shape of a run's context: a mapping, with ``outputs`` a mapping, nested at most ``MAX_NESTING`` deep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SpecError
from .limits import MAX_NESTING, nested_too_deep


def context_mapping(context: object) -> dict[str, Any]:
    """``context`` as a dict (a shallow copy; ``None`` is empty), its shape checked before anything uses it.

    Whether its values are JSON data is the caller's check (``engine.runner.to_json_data``).

    Raises:
        SpecError: ``context`` is not a mapping (path ``context``), its ``outputs`` is not one
            (path ``context.outputs``), or a value nests too deep (path ``context.<key>``).
    """
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise SpecError(
            f"a run's context is a mapping of JSON data (a dict), not {type(context).__name__}", path="context"
        )
    outputs = context.get("outputs", {})
    if not isinstance(outputs, Mapping):
        raise SpecError(
            f"context['outputs'] holds the outputs of nodes by name: a mapping, not {type(outputs).__name__}",
            path="context.outputs",
        )
    for key, value in context.items():
        if nested_too_deep(value):
            raise SpecError(
                f"nested more than {MAX_NESTING} levels deep (the limit, MAX_NESTING)", path=f"context.{key}"
            )
    return dict(context)
