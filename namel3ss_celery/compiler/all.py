"""``all``: ``chord(group(steps), settle)``; a failed step skips the body and the errback settles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import canvas

from ..plan.kinds import Join
from ..plan.model import PoolRoute
from ..registry import SETTLE_CHORD_FAILED_TASK, SETTLE_CHORD_TASK
from ..routing.queues import adapter_queue
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
    signatures = step_signatures(app, block, run_id, node, context, Join.CHORD, expires_at, pools=pools)
    # A header given as a generator keeps Celery's Redis backend from building a GroupResult in
    # apply_chord, which would subscribe this process to every step's result channel for good.
    header = canvas.group(signature for signature in signatures)
    return canvas.chord(header, settle_body(app, run_id, node, adapter_queue(block, pools)))


def settle_body(app: Any, run_id: str, node: str, queue: str | None = None) -> canvas.Signature:
    """The chord body, ignoring the header's results (settle reads the envelopes), with its errback;
    on ``queue`` when given (``adapter_queue``), else where the app routes them."""
    options = {"queue": queue} if queue else {}
    errback = app.signature(SETTLE_CHORD_FAILED_TASK, kwargs={"run_id": run_id, "node": node}, **options)
    body = app.signature(SETTLE_CHORD_TASK, args=(run_id, node), immutable=True, **options)
    body.set(link_error=[errback])
    return body
