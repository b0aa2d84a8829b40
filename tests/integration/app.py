"""A user's own Celery app, as the integration tests' workers run it.

It has its own task class, its own queues and routes, and installs
namel3ss-celery on top. Configured from N3_TEST_* variables so the test
process and the worker processes build the same app (``N3_TEST_BROKER_USE_SSL``:
its ``broker_use_ssl`` as JSON, ``cert_reqs`` a number).
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

from celery import Celery, Task
from kombu import Queue

from namel3ss_celery import Namel3ssCelery


class AuditedTask(Task):  # type: ignore[misc]
    """The app's own task class; namel3ss steps must keep it."""

    audited = True


def make_app(
    broker: str,
    backend: str,
    queue: str,
    ignore_result: bool = False,
    acks_late: bool = False,
    broker_use_ssl: dict[str, Any] | None = None,
) -> Celery:
    app = Celery("their_project", broker=broker, backend=backend, task_cls=AuditedTask, set_as_current=False)
    if broker_use_ssl is not None:
        app.conf.broker_use_ssl = dict(broker_use_ssl)  # kombu fills in a None server_hostname: a copy of its own
    app.conf.update(
        task_ignore_result=ignore_result,
        task_acks_late=acks_late,  # with it, a step whose worker is lost is delivered again
        task_reject_on_worker_lost=acks_late,
        task_default_queue=queue,
        task_queues=[Queue(queue), Queue(f"{queue}.reports")],
        task_routes={"their_project.report": {"queue": f"{queue}.reports"}},
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="their_project.report", shared=False)
    def report(text: str) -> str:
        return f"report: {text}"

    return app


def app_from_env() -> tuple[Celery, Any]:
    app = make_app(
        os.environ["N3_TEST_BROKER"],
        os.environ["N3_TEST_BACKEND"],
        os.environ["N3_TEST_QUEUE"],
        ignore_result=os.environ.get("N3_TEST_IGNORE_RESULT") == "1",
        acks_late=os.environ.get("N3_TEST_ACKS_LATE") == "1",
        broker_use_ssl=broker_use_ssl_from_env(),
    )
    return app, Namel3ssCelery(app)


def broker_use_ssl_from_env() -> dict[str, Any] | None:
    raw = os.environ.get("N3_TEST_BROKER_USE_SSL")
    if not raw:
        return None
    options: dict[str, Any] = json.loads(raw)
    if "cert_reqs" in options:
        options["cert_reqs"] = ssl.VerifyMode(options["cert_reqs"])
    return options


if "N3_TEST_BROKER" in os.environ:
    app, n3 = app_from_env()
