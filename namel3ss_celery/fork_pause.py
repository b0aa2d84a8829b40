"""Forks of a worker wait for the store calls of its own threads, so a pool process never inherits a held lock.

The prefork pool forks its processes when the worker starts, and forks a new one whenever one ends (killed,
recycled by ``worker_max_tasks_per_child``). A thread of the worker's main process that is inside a store
call at that moment may hold a lock: a connection pool's, or OpenSSL's own while it loads the CA certificates
of a ``rediss://`` connection. The forked process inherits the lock held, with no thread left to release it,
and its first store call of the same kind waits forever. The watchdog's threads and the lease keeper make
their store calls inside ``PAUSE.call()``; a fork waits until none is in progress (``FORK_WAIT`` seconds at
most: a watchdog look that settles a block with a slow reducer may outlast it), and no new one starts until
the fork is done.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("namel3ss_celery")

# Seconds a fork waits for the calls in progress before it goes on regardless: well under the 15 s a
# worker's heartbeat lives, as a heartbeat due meanwhile waits for the fork.
FORK_WAIT = 5.0


class ForkPause:
    """Calls in progress that a fork of this process waits for.

    Args:
        wait: seconds a fork waits at most.
    """

    def __init__(self, wait: float = FORK_WAIT) -> None:
        self.wait = wait
        self._reset()

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._calls = 0  # calls in progress, in every thread
        self._forks = 0  # forks under way (two threads may fork at once)
        self._mine = threading.local()  # .depth: this thread's calls in progress

    @contextmanager
    def call(self) -> Iterator[None]:
        """A store call: it starts once no fork is under way, and a fork waits for it to end."""
        depth = getattr(self._mine, "depth", 0)
        with self._changed:
            if depth == 0:
                self._changed.wait_for(lambda: self._forks == 0)
            self._calls += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            with self._changed:
                self._calls -= 1
                self._changed.notify_all()

    def before_fork(self) -> None:
        own = getattr(self._mine, "depth", 0)  # a call that forks (user code in it) does not wait for itself
        with self._changed:
            self._forks += 1
            if not self._changed.wait_for(lambda: self._calls == own, timeout=self.wait):
                logger.warning(
                    "a process is forked while a watchdog call of this worker still runs after %ss", self.wait
                )

    def after_fork_in_parent(self) -> None:
        with self._changed:
            self._forks -= 1
            self._changed.notify_all()

    def after_fork_in_child(self) -> None:
        # The child has none of the parent's other threads: only the forking thread's calls go on here.
        own = getattr(self._mine, "depth", 0)
        self._reset()
        self._calls = own
        self._mine.depth = own


PAUSE = ForkPause()

os.register_at_fork(
    before=PAUSE.before_fork,
    after_in_parent=PAUSE.after_fork_in_parent,
    after_in_child=PAUSE.after_fork_in_child,
)
