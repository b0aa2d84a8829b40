"""Every place namel3ss-celery relies on Celery's, kombu's or Django's internals, in one module.

Each shim has a test in ``tests/unit/worker/test_compat.py`` that fails loudly
when an upgrade of Celery, kombu or Django changes what it relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import canvas, states
from celery._state import _set_task_join_will_block
from celery.app.task import Context
from celery.utils import uuid

BATCH = 128  # messages per broker round trip where the transport batches (Redis)
FIRST = 8  # the first messages go at once (flushed at 1, 2, 4 and 8 sent): workers start while the rest is built


def allow_join_in_thread() -> None:
    """Let this thread wait on results, as ``celery.contrib.testing`` does for its embedded worker
    (Celery marks a worker thread as one whose joins would block)."""
    _set_task_join_will_block(False)


def fail_chord_part(app: Any, task_id: str, headers: dict[str, Any], embed: dict[str, Any], exc: BaseException) -> None:
    """Count a chord header task that never ran (its worker has no such task) as failed, as Celery's own
    task tracer would after running it: the chord's body or errback then runs.

    Args:
        headers: the message's headers (``group``, ``group_index``).
        embed: the message's embedded options (``chord``, ``errbacks``).
    """
    request = Context(
        id=task_id,
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        chord=embed["chord"],
        errbacks=embed.get("errbacks"),
        delivery_info={},
    )
    app.backend.on_chord_part_return(request, states.FAILURE, exc)


def on_commit_pending(connection: Any, callback: Any) -> bool:
    """Whether Django's ``connection`` still holds ``callback`` among its ``transaction.on_commit`` callbacks
    (a rollback drops it). Django keeps ``(savepoint ids, callback, robust)`` per pending callback."""
    return any(entry[1] == callback for entry in getattr(connection, "run_on_commit", ()))


Progress = Callable[[int], None]


def publish_steps(app: Any, steps: list[canvas.Signature], start: int = 0, progress: Progress | None = None) -> None:
    """Each step from ``start`` on, through one producer in broker batches (``group.apply_async`` would subscribe
    this process to every step's result and take a producer per step).

    ``progress(sent)`` is told how many of ``steps`` the broker has surely received, after each batch.
    """
    with app.producer_or_acquire() as producer, producer.batch(BATCH) as batch:
        for index in range(start, len(steps)):
            steps[index].apply_async(producer=producer, add_to_parent=False)
            _flushed(batch, index + 1, len(steps), progress)


def publish_chord(
    app: Any,
    header: list[canvas.Signature],
    body: canvas.Signature,
    group_id: str | None = None,
    start: int = 0,
    progress: Progress | None = None,
) -> str:
    """``chord(header, body)`` as Celery's ``chord.run`` sends it, on a backend that joins natively (Redis).

    The body is frozen in the group (its id known before any header task ends); each header message
    carries the chord (the body), the group id and its index; the group's size is stored before the
    last header message is sent. A launch that resumes sends the header from ``start`` on, in the same
    group (``group_id``). Returns the group id; ``progress`` as for ``publish_steps``.
    """
    body = body.clone()
    group_id = group_id or uuid()
    body.freeze(group_id=group_id)
    with app.producer_or_acquire() as producer, producer.batch(BATCH) as batch:
        for index in range(start, len(header)):
            if index == len(header) - 1:  # as Celery does: the size is stored before the last header task is sent
                app.backend.set_chord_size(group_id, len(header))
            header[index].apply_async(
                producer=producer, add_to_parent=False, chord=body, group_id=group_id, group_index=index
            )
            _flushed(batch, index + 1, len(header), progress)
    return group_id


def _flushed(batch: Any, sent: int, total: int, progress: Progress | None) -> None:
    """Flush the first messages at once (at 1, 2, 4 and 8 sent: workers start while the rest is built), then
    every ``BATCH``, and the last; tell ``progress`` what the broker has."""
    if sent == total or sent % BATCH == 0:
        batch.flush()
        if progress is not None:
            progress(sent)
    else:
        _flush_early(batch, sent)


def _flush_early(batch: Any, sent: int) -> None:
    if sent <= FIRST and sent & (sent - 1) == 0:  # 1, 2, 4, 8
        batch.flush()


def find_celery_app(name: str) -> Any:
    """The Celery app ``name`` names, found as ``celery -A NAME`` finds it (``proj``, ``proj.celery``,
    ``proj.celery:app``; the current directory is importable).

    Raises:
        ImportError, AttributeError: no such module or attribute.
    """
    from celery.app.utils import find_app

    return find_app(name)
