"""The embedded default: a real Celery worker in a thread of this process, over the memory transport."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from celery.worker import WorkController

from ..errors import ConfigurationError
from .compat import allow_join_in_thread


class _Controller(WorkController):  # type: ignore[misc]
    """A ``WorkController`` that says when its consumer is ready."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


class EmbeddedWorker:
    """A Celery worker (threads pool) running inside this process, for the memory transport.

    Args:
        app: the Celery app; its broker must be in-process (``memory://``).
        concurrency: threads running steps.
        hostname: the worker's name (by default ``embedded-<pid>@<host>``).
        queues: the queues it consumes (by default the app's default queue).
    """

    def __init__(
        self, app: Any, concurrency: int = 4, hostname: str | None = None, queues: list[str] | None = None
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname or f"embedded-{os.getpid()}@{socket.gethostname()}"
        self.queues = queues
        self._controller: _Controller | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> None:
        """Start the worker thread and wait until it consumes; idempotent.

        Raises:
            ConfigurationError: the worker did not become ready within ``timeout``.
        """
        with self._lock:
            if self.running:
                return
            self.app.finalize()
            # The threads pool runs tasks with Celery's *default* app; make it this one, as
            # celery.contrib.testing does for its embedded worker.
            self.app.set_default()
            controller = _Controller(
                app=self.app,
                pool="threads",
                concurrency=self.concurrency,
                hostname=self.hostname,
                queues=self.queues,
                loglevel="WARNING",
                ready_callback=None,
                without_heartbeat=True,
                without_mingle=True,
                without_gossip=True,
            )
            thread = threading.Thread(target=controller.start, name="namel3ss-embedded-worker", daemon=True)
            thread.start()
            ready = controller.ready.wait(timeout)
            # Starting a worker marks the process as "inside a task", which would forbid
            # AsyncResult.get() in the caller's own threads; undo it as celery.contrib.testing does.
            allow_join_in_thread()
            if not ready:
                raise ConfigurationError(
                    f"the embedded Celery worker did not start within {timeout:g}s", setting="broker_url"
                )
            self._controller, self._thread = controller, thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and join the thread (bounded by ``timeout``)."""
        with self._lock:
            if self._controller is None or self._thread is None:
                return
            self._controller.stop(in_sighandler=False, exitcode=0)
            self._thread.join(timeout)
            self._controller = self._thread = None
