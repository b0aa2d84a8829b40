"""Publish a node's canvas: every step message through one producer, in broker batches where it can.

A compiled node is a ``group`` of step signatures (the counted join) or a
``chord(group(steps), settle)`` (``all`` and ``map_reduce`` on Redis).
``canvas.apply_async`` would publish them too, but for each step it also
subscribes the publisher to the step's result and acquires a producer of its
own; and one broker round trip per message makes publishing a large block
the longest part of its launch. Here each step is still sent with its own
``Signature.apply_async`` (routes, signals, parent and root ids as Celery
sets them), and a chord keeps Celery's protocol: every header message carries
the group id, its index and the body, and the group's size is stored before
the last one is sent. A batch the broker does not take is not sent again
(kombu cannot tell which of its messages arrived): the launch fails and the
block ends as failed, as when a single message cannot be published.
"""

from __future__ import annotations

from typing import Any

from celery import canvas
from celery.utils import uuid

BATCH = 128  # messages per broker round trip where the transport batches (Redis)
FIRST = 8  # the first messages go at once (flushed at 1, 2, 4 and 8 sent): workers start while the rest is built


def publish_canvas(app: Any, signature: canvas.Signature) -> None:
    """Publish a node's ``group`` or ``chord`` of step signatures (any other canvas: ``apply_async``)."""
    if isinstance(signature, canvas.group):
        publish_steps(app, list(signature.tasks))
    elif isinstance(signature, canvas.chord):
        header = signature.tasks.tasks if isinstance(signature.tasks, canvas.group) else signature.tasks
        publish_chord(app, list(header), signature.body)
    else:
        signature.apply_async()


def publish_steps(app: Any, steps: list[canvas.Signature]) -> None:
    """Each step on its own (``group.apply_async`` would subscribe this process to every step's result)."""
    with app.producer_or_acquire() as producer, producer.batch(BATCH) as batch:
        for index, step in enumerate(steps):
            step.apply_async(producer=producer, add_to_parent=False)
            _flush_early(batch, index + 1)


def publish_chord(app: Any, header: list[canvas.Signature], body: canvas.Signature) -> None:
    """``chord(header, body)`` as Celery's ``chord.run`` sends it, on a backend that joins natively (Redis).

    The body is frozen in the group (its id known before any header task ends);
    each header message carries the chord (the body), the group id and its index.
    """
    body = body.clone()
    group_id = uuid()
    body.freeze(group_id=group_id)
    with app.producer_or_acquire() as producer, producer.batch(BATCH) as batch:
        for index, step in enumerate(header):
            if index == len(header) - 1:  # as Celery does: the size is stored before the last header task is sent
                app.backend.set_chord_size(group_id, len(header))
            step.apply_async(producer=producer, add_to_parent=False, chord=body, group_id=group_id, group_index=index)
            _flush_early(batch, index + 1)


def _flush_early(batch: Any, sent: int) -> None:
    if sent <= FIRST and sent & (sent - 1) == 0:  # 1, 2, 4, 8
        batch.flush()
