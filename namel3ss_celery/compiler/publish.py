"""Publish a node's canvas: every step message through one producer, in broker batches where it can.

A compiled node is a ``group`` of step signatures (the counted join) or a
``chord(group(steps), settle)`` (``all`` and ``map_reduce`` on Redis).
``canvas.apply_async`` would publish them too, but for each step it also
subscribes the publisher to the step's result and acquires a producer of its
own; and one broker round trip per message makes publishing a large block
the longest part of its launch. Here each step is still sent with its own
``Signature.apply_async`` (routes, signals, parent and root ids as Celery
sets them), and a chord keeps Celery's protocol (``worker.compat``). A batch
the broker does not take is not sent again (kombu cannot tell which of its
messages arrived): the launch fails and the block ends as failed, as when a
single message cannot be published.
"""

from __future__ import annotations

from typing import Any

from celery import canvas
from celery.utils import uuid

from ..engine.ports import Launching
from ..worker.compat import publish_chord, publish_steps


def publish_canvas(app: Any, signature: canvas.Signature, launching: Launching | None = None) -> None:
    """Publish a node's ``group`` or ``chord`` of step signatures (any other canvas: ``apply_async``).

    ``launching`` says where to start (a resumed launch) and hears of the progress; a chord's group id is
    reported to it before its first header message is sent, so a resumed launch sends the rest in the
    same group.
    """
    launching = launching or Launching()
    if isinstance(signature, canvas.group):
        publish_steps(app, list(signature.tasks), launching.start, launching.sent)
    elif isinstance(signature, canvas.chord):
        header = signature.tasks.tasks if isinstance(signature.tasks, canvas.group) else signature.tasks
        group_id = launching.group_id
        if group_id is None:
            group_id = uuid()
            launching.remember_group(group_id)
        publish_chord(app, list(header), signature.body, group_id, launching.start, launching.sent)
    else:
        signature.apply_async()
