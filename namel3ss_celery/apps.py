"""The Celery app namel3ss-celery makes when it is given none, and what it asks of a user's app."""

from __future__ import annotations

from celery import Celery

from .errors import ConfigurationError
from .settings import EMBEDDED_BACKEND, EMBEDDED_BROKER, Settings


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``: their broker and backend, or the embedded default."""
    app = Celery("namel3ss_celery", set_as_current=False)
    if settings.embedded:
        app.conf.update(
            broker_url=EMBEDDED_BROKER,
            result_backend=EMBEDDED_BACKEND,
            # The memory transport polls; its default of 1s per empty poll makes every hop slow.
            broker_transport_options={"polling_interval": 0.005},
        )
    else:
        app.conf.update(broker_url=settings.broker_url, result_backend=settings.result_backend)
    app.conf.update(result_expires=settings.result_expires, task_serializer="json", accept_content=["json"])
    return app


def check_backend(app: Celery) -> None:
    """Refuse a result backend that cannot serve runs.

    Raises:
        ConfigurationError: ``rpc://``, which cannot join chords or be read from another process.
    """
    backend = str(app.conf.result_backend or "")
    if backend.startswith("rpc"):
        raise ConfigurationError(
            f"result_backend {backend!r} cannot join chords or be read from another process; "
            "set CELERY_RESULT_BACKEND (result_backend) to redis:// or another store",
            setting="result_backend",
        )
