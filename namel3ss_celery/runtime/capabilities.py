"""Capability routing of a distributed queue: which Celery queue a task goes to, and which queues a worker consumes.

Namel3ss routes a task by ``task.metadata["required_capability"]``: one capability, which a worker must list
in its ``WorkerNode.capabilities`` to run the task (a task without one runs on any worker). Here that is
done with Celery queues: a task that requires ``gpu`` on the queue ``images`` is published to
``images.cap.gpu``; a worker with the capabilities ``{"gpu"}`` consumes ``images`` and ``images.cap.gpu``
(``worker_queues``), one queue per capability it has. A task whose capability no worker offers waits in
its queue (status ``queued``) until a worker with it consumes that queue.

A capability names a queue: a non-empty string of letters, digits, ``_``, ``-``, ``.`` and ``:``
(at most 100 characters), so that it can be written in ``celery worker -Q``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import InvalidArgument

REQUIRED_CAPABILITY = "required_capability"  # the key of DistributedTask.metadata that Namel3ss routes on
CAPABILITY_INFIX = ".cap."  # <queue>.cap.<capability>

_CAPABILITY = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def check_capability(value: object, argument: str) -> str:
    """``value`` as a capability, or an error naming ``argument`` (the field it came from).

    Raises:
        InvalidArgument: not a string of the allowed characters (a set or list included: Namel3ss routes
            a task on one capability).
    """
    if not isinstance(value, str):
        kind = type(value).__name__
        raise InvalidArgument(
            f"a capability is one string (Namel3ss routes a task on one required capability), not {kind} {value!r}",
            argument,
        )
    if not _CAPABILITY.fullmatch(value):
        raise InvalidArgument(
            f"capability {value!r} cannot name a queue: use 1 to 100 letters, digits, '_', '-', '.' or ':'",
            argument,
        )
    return value


def check_capabilities(values: Iterable[object], argument: str = "capabilities") -> set[str]:
    """The capabilities of a worker, each checked (``check_capability``); a bare string is refused too.

    Raises:
        InvalidArgument: ``values`` is a string, or one of them is not a capability.
    """
    if isinstance(values, str):
        raise InvalidArgument(f"capabilities are a set of strings, not the string {values!r}", argument)
    return {check_capability(value, argument) for value in values}


def required_capability(metadata: Mapping[str, Any]) -> str | None:
    """The capability a task requires (``metadata["required_capability"]``), or None; empty means none, as in
    Namel3ss.

    Raises:
        InvalidArgument: it is not one capability (a set or list of them included).
    """
    value = metadata.get(REQUIRED_CAPABILITY)
    if value is None or value == "":
        return None
    return check_capability(value, f"metadata[{REQUIRED_CAPABILITY!r}]")


def capability_queue(queue_name: str, capability: str) -> str:
    """The Celery queue of ``queue_name``'s tasks that require ``capability``: ``<queue>.cap.<capability>``.

    Raises:
        InvalidArgument: ``capability`` is not a capability.
    """
    return f"{queue_name}{CAPABILITY_INFIX}{check_capability(capability, REQUIRED_CAPABILITY)}"


def task_queue(queue_name: str, metadata: Mapping[str, Any]) -> str:
    """Where a task of ``queue_name`` with ``metadata`` is published: the queue itself, or its capability's.

    Raises:
        InvalidArgument: ``metadata["required_capability"]`` is not one capability.
    """
    capability = required_capability(metadata)
    return queue_name if capability is None else capability_queue(queue_name, capability)


def worker_queues(queue_name: str, capabilities: Iterable[str] = ()) -> list[str]:
    """The queues a worker of ``queue_name`` with ``capabilities`` consumes: the queue, then one per capability
    (sorted), e.g. ``["images", "images.cap.gpu"]``; joined by commas, the value of ``celery worker -Q``.

    Raises:
        InvalidArgument: one of ``capabilities`` is not a capability.
    """
    return [queue_name, *(capability_queue(queue_name, c) for c in sorted(check_capabilities(capabilities)))]


def consumed_capabilities(queue_name: str, consumed: Iterable[str]) -> Iterator[str]:
    """The capabilities of ``queue_name`` whose queues are among ``consumed`` (what a worker's queues say)."""
    prefix = f"{queue_name}{CAPABILITY_INFIX}"
    for name in consumed:
        if name.startswith(prefix) and _CAPABILITY.fullmatch(name[len(prefix) :]):
            yield name[len(prefix) :]
