"""A worker connected to its Redis broker again puts back the messages its lost connection held.

When the broker goes away, the worker's channel closes and tries to put the messages it held
unacknowledged (prefetched, or running under late acknowledgement) back in their queues, which needs the
server that just went away. ``compat.keep_unrestored_messages`` keeps their tags instead of losing them
(they would wait in the broker's ``unacked`` hash for the visibility timeout, an hour by default) or
ending the worker; this consumer step puts them back as soon as the worker's task consumer is connected
again, so their steps run now.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from .compat import keep_unrestored_messages, restore_unrestored

logger = logging.getLogger("namel3ss_celery")


def add_restore_on_reconnect(app: Any) -> None:
    """In every worker of ``app``: keep what a lost Redis connection could not put back, and put it back at
    the next connection."""

    class RestoreUnacked(bootsteps.StartStopStep):  # type: ignore[misc]
        name = "namel3ss_celery.RestoreUnacked"
        requires = ("celery.worker.consumer.tasks:Tasks",)  # started again at every connection, after Tasks

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            keep_unrestored_messages()
            super().__init__(parent, **kwargs)

        def start(self, parent: Any) -> None:
            try:
                count = restore_unrestored(parent.task_consumer.channel)
            except Exception:  # noqa: BLE001 - the connection failed again: kept for the next one, said here
                logger.warning("could not put back the messages the lost connection held; trying again", exc_info=True)
                return
            if count:
                logger.warning("put back in their queues %d message(s) the lost broker connection held", count)

    app.steps["consumer"].add(RestoreUnacked)
