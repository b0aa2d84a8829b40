"""A plain Celery app whose workers size their pool with ``QueueDepthAutoscaler``.

Configured from N3_AUTOSCALE_* variables (broker, backend, queue) so the test
process and the worker process build the same app. The worker also needs
``NAMEL3SS_CELERY_PROGRAM`` and ``NAMEL3SS_CELERY_POOL`` for the thresholds.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from kombu import Queue

from namel3ss_celery.routing.autoscale import autoscaler_setting


def make_app(broker: str, backend: str, queue: str) -> Celery:
    app = Celery("autoscale", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue)],
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_autoscaler=autoscaler_setting(),
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="autoscale.sleep", shared=False)
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    return app


if "N3_AUTOSCALE_BROKER" in os.environ:
    app = make_app(
        os.environ["N3_AUTOSCALE_BROKER"], os.environ["N3_AUTOSCALE_BACKEND"], os.environ["N3_AUTOSCALE_QUEUE"]
    )
