"""The TCP connections this process tries to open, seen through Python's audit hooks (PEP 578).

``socket.connect`` and ``socket.connect_ex`` raise the audit event ``socket.connect`` before
the system call, whichever library makes it (redis-py, py-amqp, kombu): a test reads what was
attempted without replacing any of them. A hook cannot be removed once added, so one is added
for the process, the first time it is needed, and it records only inside ``connects()``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_recording: list[list[Any]] = []
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _recording:
        for seen in list(_recording):
            seen.append(args[1])


@contextmanager
def connects() -> Iterator[list[Any]]:
    """The addresses (``(host, port)`` for TCP) that sockets of this process, in any thread, tried inside the block."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
    seen: list[Any] = []
    _recording.append(seen)
    try:
        yield seen
    finally:
        _recording.remove(seen)
