"""The integration tests' app for beat: the user's app of ``app.py``, with RedBeat's keys under a prefix of
the test's own (``N3_TEST_REDBEAT_PREFIX``), so each test's beat has its own entries and lock."""

from __future__ import annotations

import os

from celery import Celery

from namel3ss_celery import Namel3ssCelery

from .app import make_app


def make_beat_app(broker: str, backend: str, queue: str, prefix: str) -> Celery:
    app = make_app(broker, backend, queue)
    app.conf.redbeat_key_prefix = prefix
    # RedBeat's lock lives 5 x max_interval (5 s under the tests' --max-interval 1) and a beat whose tick
    # comes later than that (a loaded 2-core machine) exits with LockNotOwnedError; only one beat here
    # uses RedBeat, so a longer lock changes nothing else.
    app.conf.redbeat_lock_timeout = 60
    return app


if "N3_TEST_REDBEAT_PREFIX" in os.environ:
    app = make_beat_app(
        os.environ["N3_TEST_BROKER"],
        os.environ["N3_TEST_BACKEND"],
        os.environ["N3_TEST_QUEUE"],
        os.environ["N3_TEST_REDBEAT_PREFIX"],
    )
    n3 = Namel3ssCelery(app)
