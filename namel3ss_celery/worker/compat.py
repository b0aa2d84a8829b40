"""Every place namel3ss-celery relies on Celery's, kombu's or Django's internals, in one module.

Each shim has a test in ``tests/unit/worker/test_compat.py`` that fails loudly
when an upgrade of Celery, kombu or Django changes what it relies on.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import canvas, states
from celery._state import _set_task_join_will_block
from celery.app.task import Context
from celery.utils import uuid

logger = logging.getLogger("namel3ss_celery")

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


class HeldMessages:
    """Messages a Redis channel of this process held unacknowledged when its connection was lost: kombu
    puts them back in their queues as the channel closes, which needs the server that just went away.

    ``restore``: to put back in their queues at the next connection. ``acked``: put back meanwhile by
    nobody, and acknowledged since (their step ended): removed from kombu's ``unacked`` hash instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._restore: list[str] = []
        self._acked: list[str] = []

    def keep(self, tags: list[str]) -> None:
        with self._lock:
            self._restore.extend(tag for tag in tags if tag not in self._restore)

    def keep_acked(self, tags: list[str]) -> None:
        with self._lock:
            self._acked.extend(tag for tag in tags if tag not in self._acked)

    def acknowledge(self, tag: str) -> bool:
        """``tag`` was acknowledged: not to be put back. False when it was not held (put back already)."""
        with self._lock:
            if tag not in self._restore:
                return False
            self._restore.remove(tag)
            self._acked.append(tag)
            return True

    def take(self) -> tuple[list[str], list[str]]:
        """What to put back, and what to remove: both handed over (and no longer held here)."""
        with self._lock:
            taken = self._restore, self._acked
            self._restore, self._acked = [], []
        return taken


HELD = HeldMessages()


def keep_unrestored_messages() -> None:
    """Make kombu's Redis transport keep, rather than lose or die of, what a lost connection cannot do.

    A worker's channel closing after its connection was lost puts the messages it holds unacknowledged
    (prefetched, or running under late acknowledgement) back in their queues (``QoS.restore_unacked``);
    a step that ends later acknowledges its message on that closed channel (``QoS.ack``). With the server
    away these fail: with a ``ConnectionError`` (the messages then wait in the ``unacked`` hash for the
    visibility timeout, an hour by default), or with an ``AttributeError`` once the channel has let go of
    its connection, which ends the worker ("Unrecoverable error"). Here each failure is logged and what it
    had to do kept in ``HELD``, for ``restore_unrestored`` once connected again.
    """
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    if getattr(qos.restore_unacked, "namel3ss_keeps", False):
        return
    restore_unacked, ack, reject = qos.restore_unacked, qos.ack, qos.reject

    @functools.wraps(restore_unacked)  # each wrapper names what it wraps (``__wrapped__``)
    def keeping_restore_unacked(self: Any, client: Any = None) -> Any:
        # kombu's own restore_unacked, tag by tag, so that what went back is not kept to go back twice
        tags, restored = _delivered_tags(self), 0
        try:
            with self.channel.conn_or_acquire(client) as connected:
                for tag in tags:
                    self.restore_by_tag(tag, client=connected)
                    restored += 1
        except Exception as exc:  # noqa: BLE001 - any failure here would lose the messages, or the worker
            HELD.keep(tags[restored:])
            _lost_connection(f"could not put {len(tags) - restored} unacknowledged message(s) back", exc)
        finally:
            self._delivered.clear()

    @functools.wraps(ack)
    def keeping_ack(self: Any, delivery_tag: Any) -> None:
        try:
            ack(self, delivery_tag)
        except Exception as exc:  # noqa: BLE001 - as above
            delivered = self._delivered.pop(delivery_tag, None) is not None
            _acknowledged_late(str(delivery_tag), delivered, exc)

    @functools.wraps(reject)
    def keeping_reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            reject(self, delivery_tag, requeue)
        except Exception as exc:  # noqa: BLE001 - as above
            delivered = self._delivered.pop(delivery_tag, None) is not None
            if requeue:
                HELD.keep([str(delivery_tag)])
                _lost_connection("could not put a rejected message back in its queue", exc)
            else:
                _acknowledged_late(str(delivery_tag), delivered, exc)

    keeping_restore_unacked.namel3ss_keeps = True  # type: ignore[attr-defined]
    qos.restore_unacked, qos.ack, qos.reject = keeping_restore_unacked, keeping_ack, keeping_reject


def _lost_connection(what: str, exc: Exception) -> None:
    logger.warning("%s (%s: %s); done once this worker is connected again", what, type(exc).__name__, exc)


def _delivered_tags(qos: Any) -> list[str]:
    """The tags ``qos`` holds unacknowledged; read again should another thread (a threads pool acknowledging)
    change them meanwhile."""
    for _ in range(10):
        try:
            return [str(tag) for tag in list(qos._delivered)]
        except RuntimeError:  # changed size during iteration
            continue
    return []


def _acknowledged_late(tag: str, delivered: bool, exc: Exception) -> None:
    """An acknowledgement the broker did not get: its message is removed from the ``unacked`` hash at the next
    connection, not put back (its step ran), when this channel still held it or kept it to put back."""
    if HELD.acknowledge(tag) or delivered:
        HELD.keep_acked([tag])
        _lost_connection(f"could not acknowledge message {tag}", exc)
    else:  # put back already: the broker may deliver it again (a duplicate, counted once)
        logger.warning(
            "could not acknowledge message %s (%s: %s): should the broker deliver it again, its step counts once",
            tag,
            type(exc).__name__,
            exc,
        )


def restore_unrestored(channel: Any) -> int:
    """Do through ``channel`` (a Redis channel, connected) what ``HELD`` kept: put its messages back in their
    queues, remove the acknowledged ones from the ``unacked`` hash; how many messages were handled. A
    message restored meanwhile (another worker's visibility-timeout sweep) is no longer in the hash and is
    not put back twice: kombu's ``restore_by_tag`` reads and removes it in one transaction. What could not
    be done is kept for the next connection.

    Raises:
        Exception: what the broker raised (the connection was lost again).
    """
    qos: Any = getattr(channel, "qos", None)
    if not hasattr(qos, "restore_by_tag"):
        return 0  # not a virtual channel (RabbitMQ acknowledges through the server it reconnects to)
    restore, acked = HELD.take()
    for done, tag in enumerate(acked):
        try:
            qos._remove_from_indices(tag).execute()
        except Exception:
            HELD.keep(restore)
            HELD.keep_acked(acked[done:])
            raise
    for done, tag in enumerate(restore):
        try:
            qos.restore_by_tag(tag)
        except Exception:
            HELD.keep(restore[done:])
            raise
    return len(acked) + len(restore)
