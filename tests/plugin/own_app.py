"""A user's own Celery app and Namel3ssCelery, as the README's "Your own Celery app" makes them (here on
the in-memory broker, with ``own_worker=False``: the tests' worker is the plugin's ``n3_worker``)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from namel3ss_celery import Namel3ssCelery

app = Celery("own_app", broker="memory://", backend="cache+memory://")
n3 = Namel3ssCelery(app, own_worker=False)


@n3.step("own_triple")  # registered on this instance only: the module-level @step would reach every one
def triple(step: dict[str, Any], context: dict[str, Any]) -> int:
    return int(step["n"]) * 3
