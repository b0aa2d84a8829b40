"""``all``: ``chord(group(steps), settle)``; a failed step skips the body and the errback settles."""

from __future__ import annotations

from typing import Any

from celery import canvas

from ..registry import SETTLE_CHORD_FAILED_TASK, SETTLE_CHORD_TASK
from ..spec import ParallelBlockSpec
from .steps import step_signatures


def build(app: Any, block: ParallelBlockSpec, run_id: str, node: str, context: dict[str, Any]) -> canvas.Signature:
    header = canvas.group(step_signatures(app, block, run_id, node, context, join="chord"))
    return canvas.chord(header, settle_body(app, run_id, node))


def settle_body(app: Any, run_id: str, node: str) -> canvas.Signature:
    """The chord body, ignoring the header's results (settle reads the envelopes), with its errback."""
    errback = app.signature(SETTLE_CHORD_FAILED_TASK, kwargs={"run_id": run_id, "node": node})
    body = app.signature(SETTLE_CHORD_TASK, args=(run_id, node), immutable=True)
    body.set(link_error=[errback])
    return body
