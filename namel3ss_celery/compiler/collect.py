"""``collect``: ``group(steps)`` joined by the adapter's counter, since a chord skips its body after a failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import canvas

from ..plan.kinds import Join
from ..plan.model import PoolRoute
from ..spec import ParallelBlockSpec
from .steps import step_signatures


def build(
    app: Any,
    block: ParallelBlockSpec,
    run_id: str,
    node: str,
    context: dict[str, Any],
    expires_at: float | None,
    pools: Mapping[str, PoolRoute] | None = None,
) -> canvas.Signature:
    return canvas.group(step_signatures(app, block, run_id, node, context, Join.COUNT, expires_at, pools=pools))
