"""The default app, for ``celery -A namel3ss_celery worker``.

Configured from the environment: ``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``,
``NAMEL3SS_CELERY_STEP_MODULES`` (imported when the worker starts) and
``NAMEL3SS_CELERY_COORDINATION_URL``. Importing this module builds the app;
it connects to nothing until a worker starts or something is dispatched.
"""

from __future__ import annotations

from .extension import Namel3ssCelery
from .runtime.queue_task import register_queue_task

n3 = Namel3ssCelery()
app = n3.app
# Workers of this app also serve distributed task queues (``celery -A namel3ss_celery worker -Q <queue>``).
register_queue_task(app, {}, n3.settings.step_modules)

__all__ = ["app", "n3"]
