"""The adapter's own events in Celery's event system, so ``celery events`` and Flower's event stream see runs.

A run started or ended (and, with ``NAMEL3SS_CELERY_STEP_EVENTS``, each step) is sent as a Celery event
next to the task events: ``n3-workflow-started``, ``n3-workflow-completed``, ``n3-task-completed``,
``n3-task-failed``. Its fields are the event's id, run id, workflow, status and data, flat enough for a
Celery event receiver (``app.events.Receiver``) to read.

They go out where task events go out: in a worker started with ``-E`` (``--task-events``), and in any
process whose app sets ``worker_send_task_events``. A worker switched on later by a remote
``enable_events`` (Flower does that) sends its task events but not these: its processes learnt at start
that they were off. Sending one is never a reason to fail a run: a broker error is logged and dropped,
as Celery's own event dispatcher does when it is offline.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from kombu.exceptions import OperationalError

from .model import Event

logger = logging.getLogger("namel3ss_celery")

PREFIX = "n3-"


def celery_event_type(event: Event) -> str:
    """``workflow_completed`` → ``n3-workflow-completed`` (Celery's ``group-name`` form)."""
    return PREFIX + str(event.event_type).replace("_", "-")


def celery_event_fields(event: Event) -> dict[str, Any]:
    """The fields sent with the Celery event: who, which run, how it ended, and the whole event's data."""
    data = event.data
    return {
        "event_id": event.event_id,
        "run_id": data.get("instance_id") or data.get("run_id"),
        "workflow": data.get("workflow_name") or data.get("workflow"),
        "status": data.get("status"),
        "source": event.source,
        "correlation_id": event.correlation_id,
        "data": data,
    }


class CeleryEvents:
    """Sends ``app``'s workflow events to Celery's event system when this process sends task events."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hostname: str | None = None  # the worker's node name; Celery's anonymous one elsewhere
        self._worker_sends: bool | None = None  # what the worker of this process was started with
        signals.celeryd_after_setup.connect(self._on_worker_setup)  # weakly: while this object lives

    def _on_worker_setup(self, sender: Any = None, instance: Any = None, **_: Any) -> None:
        # Sent in a starting worker's main process, before its pool forks: the children inherit this.
        if instance is not None and getattr(instance, "app", None) is self.app:
            self._worker_sends = bool(getattr(instance, "task_events", False))
            self.hostname = getattr(instance, "hostname", None)

    @property
    def enabled(self) -> bool:
        if self._worker_sends is not None:
            return self._worker_sends
        return bool(self.app.conf.worker_send_task_events)

    def send(self, event: Event) -> None:
        """Send ``event`` as a Celery event, if this process sends task events."""
        if not self.enabled:
            return
        try:
            with self.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
                dispatcher.send(celery_event_type(event), retry=False, **celery_event_fields(event))
        except (OperationalError, *self.app.connection_for_write().connection_errors) as exc:  # read on error only
            logger.warning("could not send %s to Celery's events: %s", celery_event_type(event), exc)
