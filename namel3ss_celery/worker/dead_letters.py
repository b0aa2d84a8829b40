"""Dead letters: steps that failed for good on a task queue with a ``dead_letter_queue``.

How a step gets there depends on the broker:

- RabbitMQ, at_least_once (late ack): the failed message is rejected without
  requeue (step tasks set Celery's ``acks_on_failure=False``) and RabbitMQ
  moves it through the queue's ``x-dead-letter-exchange``, adding its
  ``x-death`` header. The error is the task's FAILURE in the result backend.
- Redis, and at_most_once on RabbitMQ (the message was acknowledged when the
  step started): the worker publishes a copy of the message to the
  dead-letter queue (on Redis, the list of that name), with the error in its
  ``n3_dead_letter`` header.

``namel3ss-celery dlq list`` reads them without taking them off the queue;
``dlq requeue`` publishes each one again to the queue it died on, as a new
task marked ``requeued_from`` (it runs outside its block, which had already
ended; its result is the new task's), at most ``max_dead_letter_retries``
times per message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery.utils.nodenames import WORKER_DIRECT_EXCHANGE, worker_direct
from kombu.connection import Connection
from kombu.message import Message

from ..engine.values import describe
from ..errors import RoutingError
from ..plan.message import StepMessage
from ..registry import EVENT_HANDLE_TASK, STEP_TASK_PREFIX
from ..routing.queues import Broker, broker_kind, declare_queue
from ..spec import ProgramSpec, TaskQueueSpec

HEADER = "n3_dead_letter"
FETCH_TIMEOUT = 1.0  # seconds to wait for the next message before a queue counts as drained
SCAN_FACTOR = 10  # dlq requeue reads up to this many times its limit, past dead letters it keeps


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, as ``dlq list`` shows it."""

    task_id: str
    task: str  # n3.step.<target>
    queue: str  # the queue it died on
    run: str | None
    node: str | None
    step: str | None
    error: str | None
    requeues: int  # how many times it was requeued from a dead-letter queue before
    dead_lettered_at: float | None  # seconds since the epoch, when known


@dataclass(frozen=True)
class Requeued:
    """What ``dlq requeue`` did with one dead letter: ``task_id`` is the new task (None when it was kept)."""

    dead_letter: DeadLetter
    task_id: str | None
    kept_because: str | None = None


def dead_letter_sources(program: ProgramSpec) -> dict[str, TaskQueueSpec]:
    """Each dead-letter queue of the program, with the task queue that dead-letters into it.

    Raises:
        RoutingError: two task queues share one dead-letter queue with different ``max_dead_letter_retries``.
    """
    sources: dict[str, TaskQueueSpec] = {}
    for queue in program.task_queues:
        if not queue.dead_letter_queue:
            continue
        seen = sources.setdefault(queue.dead_letter_queue, queue)
        if seen.max_dead_letter_retries != queue.max_dead_letter_retries:
            raise RoutingError(
                f"task queues {seen.name!r} and {queue.name!r} share dead-letter queue {queue.dead_letter_queue!r} "
                f"but differ in max_dead_letter_retries; give them the same value"
            )
    return sources


def publish_dead_letter(
    app: Any, request: Any, task_name: str, message: StepMessage, error: str, came_from: str
) -> None:
    """Worker side: put a copy of a failed step's message on its dead-letter queue (``message.dlq``).

    ``came_from`` is the queue ``dlq requeue`` sends it back to. Not needed (and not called) where
    RabbitMQ dead-letters the rejected message itself.
    """
    queue = declare_queue(str(message.dlq), {})
    header = {"queue": came_from, "error": error, "at": time.time()}
    app.send_task(
        task_name,
        args=(message.encode(),),
        task_id=request.id,
        queue=queue,
        headers={HEADER: header},
        argsrepr=getattr(request, "argsrepr", None),
        add_to_parent=False,
        ignore_result=True,
    )


def broker_dead_letters_itself(app: Any, acks_late: bool) -> bool:
    """True where the broker moves a rejected step to its dead-letter queue (RabbitMQ, late ack)."""
    return acks_late and broker_kind(str(app.conf.broker_url or "memory://")) is Broker.RABBITMQ


def list_dead_letters(app: Any, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` messages of dead-letter queue ``queue``, left on the queue."""
    with _reading(app, queue, limit) as messages:
        return [_describe(app, message) for message in messages]  # unacknowledged: they go back on close


def requeue_dead_letters(app: Any, queue: str, max_requeues: int, limit: int = 100) -> list[Requeued]:
    """Publish up to ``limit`` dead letters of ``queue`` again to the queues they died on.

    Each becomes a new task (new id) whose payload says ``requeued_from``, with
    the message's time limits and priority; the dead letter is removed once
    that is published. A message already requeued ``max_requeues`` times stays
    on the dead-letter queue and does not count towards ``limit``, so newer
    dead letters behind it are still reached (at most ``SCAN_FACTOR`` x
    ``limit`` messages are read).
    """
    done: list[Requeued] = []
    requeued = 0
    sent: set[str] = set()
    with _reading(app, queue, limit * SCAN_FACTOR) as messages:
        for message in messages:
            letter = _describe(app, message)
            if letter.task_id in sent:  # one it requeued just now, that failed again already: not twice in a pass
                break
            if letter.requeues >= max_requeues:
                reason = f"requeued {letter.requeues} times already (max_dead_letter_retries {max_requeues})"
                done.append(Requeued(letter, None, reason))
                continue
            why_not = _requeue(app, message, letter, new_id := str(uuid.uuid4()))
            if why_not is not None:
                done.append(Requeued(letter, None, why_not))
                continue
            message.ack()  # type: ignore[no-untyped-call]
            done.append(Requeued(letter, new_id))
            sent.add(new_id)
            requeued += 1
            if requeued >= limit:
                break
    return done


def _requeue(app: Any, message: Message, letter: DeadLetter, new_id: str) -> str | None:
    """Publish ``letter`` again, as task ``new_id``, to the queue it died on; why not, when it cannot be."""
    args, _kwargs, _embed = message.decode()  # type: ignore[no-untyped-call]
    # Not declared again: the queue exists (the message died on it) with arguments only the program knows.
    options: dict[str, Any] = {"task_id": new_id, "declare": [], "add_to_parent": False}
    if not letter.queue:
        return "the queue it died on is not known"
    if letter.task == EVENT_HANDLE_TASK:  # an event handler: run it again on its event
        app.send_task(
            EVENT_HANDLE_TASK,
            args=(args[0], args[1], letter.requeues + 1),
            queue=declare_queue(letter.queue, {}),
            ignore_result=True,
            **options,
        )
        return None
    if not letter.task.startswith(STEP_TASK_PREFIX):
        return "not a namel3ss step with a known queue"
    step = StepMessage.routing(args[0] if args else None)
    if step is None:
        return "its message is not a step message this version reads"
    hard, soft = (message.headers or {}).get("timelimit") or (None, None)
    app.send_task(
        letter.task,
        args=(step.requeued(letter.task_id).encode(),),
        queue=declare_queue(letter.queue, {}),
        time_limit=hard,
        soft_time_limit=soft,
        priority=message.properties.get("priority"),
        **options,
    )
    return None


@contextmanager
def _reading(app: Any, queue: str, most: int) -> Iterator[Iterator[Message]]:
    """The messages of ``queue``, taken one by one unacknowledged (at most ``most``); whatever is not
    acknowledged goes back to the queue when the block ends."""
    if most < 1:
        raise RoutingError(f"limit must be at least 1 (got {most})")
    connection: Connection = app.connection_for_read()
    try:
        channel = connection.channel()  # type: ignore[no-untyped-call]
        bound = declare_queue(queue, {})(channel)
        bound.declare()  # type: ignore[no-untyped-call]

        def messages() -> Iterator[Message]:
            taken, deadline = 0, time.monotonic() + FETCH_TIMEOUT
            while taken < most and time.monotonic() < deadline:
                message = bound.get(no_ack=False)  # type: ignore[no-untyped-call]
                if message is None:
                    time.sleep(0.05)
                    continue
                taken, deadline = taken + 1, time.monotonic() + FETCH_TIMEOUT
                yield message

        yield messages()
        channel.close()  # unacknowledged messages go back to the queue
    finally:
        connection.release()  # type: ignore[no-untyped-call]


def _describe(app: Any, message: Message) -> DeadLetter:
    headers = message.headers or {}
    args, _kwargs, _embed = message.decode()  # type: ignore[no-untyped-call]
    step = StepMessage.routing(args[0] if args else None)
    task_id = str(headers.get("id") or "")
    ours = headers.get(HEADER) or {}
    deaths = headers.get("x-death") or []
    queue = ours.get("queue") or (deaths[0].get("queue") if deaths else "") or ""
    at = ours.get("at")
    if at is None and deaths and deaths[0].get("time") is not None:
        at = _epoch(deaths[0]["time"])
    error = ours.get("error") or _backend_error(app, task_id)
    if headers.get("task") == EVENT_HANDLE_TASK and len(args) >= 2:  # an event handler that kept failing
        event = args[1] if isinstance(args[1], dict) else {}
        return DeadLetter(
            task_id=task_id,
            task=EVENT_HANDLE_TASK,
            queue=str(queue),
            run=None,
            node=f"handler {args[0]}",
            step=f"event {event.get('event_id')} ({event.get('event_type')})",
            error=error,
            requeues=int(args[2]) if len(args) > 2 else 0,
            dead_lettered_at=at,
        )
    return DeadLetter(
        task_id=task_id,
        task=str(headers.get("task") or ""),
        queue=str(queue),
        run=step.run if step else None,
        node=step.node if step else None,
        step=step.key if step else None,
        error=error,
        requeues=step.requeues if step else 0,
        dead_lettered_at=at,
    )


def _backend_error(app: Any, task_id: str) -> str | None:
    """The error the result backend holds for a failed task (RabbitMQ dead letters carry none of their own)."""
    if not task_id:
        return None
    meta = app.backend.get_task_meta(task_id)
    if meta.get("status") != "FAILURE":
        return None
    result = meta.get("result")
    if isinstance(result, BaseException):
        return describe(result)
    return str(result) if result is not None else None


def _epoch(value: Any) -> float | None:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def dead_letter_step(app: Any, task: Any, message: StepMessage, error: str, sticky_queue: str | None) -> None:
    """Dead-letter a step of ``task`` that failed for good (its task queue has a ``dead_letter_queue``).

    RabbitMQ dead-letters a rejected late-acknowledged message itself; otherwise a copy is published. A
    message that came through a worker's direct queue (sticky, worker_affinity) has no dead-letter exchange,
    so it is always copied; it is requeued to its pool's queue (``sticky_queue``, sticky) or to that same
    direct queue (worker_affinity).
    """
    delivery = task.request.delivery_info or {}
    came_from = str(delivery.get("routing_key") or "")
    own = worker_direct(task.request.hostname or "").name
    # Celery sends to a direct queue through the default exchange, with the queue's name as routing key.
    direct = delivery.get("exchange") == WORKER_DIRECT_EXCHANGE.name or came_from == own
    if direct or not broker_dead_letters_itself(app, bool(task.acks_late)):
        if direct:
            came_from = (sticky_queue or own) if message.sticky is not None else own
        publish_dead_letter(app, task.request, task.name, message, error, came_from)
