"""A pytest plugin for your own tests: ``pytest_plugins = ["namel3ss_celery.testing"]``.

Fixtures, on Celery's own test fixtures (``celery_app``, ``celery_config``, ``celery_worker_pool`` and
``celery_worker_parameters`` from ``celery.contrib.pytest``, which this plugin loads, with or without
pytest-celery; pytest-celery's ``celery_worker`` needs Docker, so the worker here is Celery's embedded
test worker):

- ``n3``: namel3ss-celery installed on ``celery_app`` (your ``celery_config`` applies; by default the
  in-memory broker and result backend, and an in-memory coordination store).
- ``n3_worker``: Celery's test worker (``celery.contrib.testing.worker.start_worker``, a thread of this
  process) on that app, started after ``n3`` registered its steps: dispatched runs run on it, as on a
  real worker (no eager mode: the same messages, settles and outcomes). Its pool is
  ``celery_worker_pool`` (``solo`` unless you override it: a race needs ``"threads"`` and a
  ``celery_worker_parameters`` of ``{"concurrency": 4}``, so its steps run at once)::

      def test_summaries(n3, n3_worker):
          run = n3.dispatch({"name": "b", "strategy": "race", "steps": [...]})
          assert run.get(timeout=10).overall_status == "completed"

Not while an embedded default worker (``Namel3ssCelery()`` with no broker) runs in the same process: both
use the process's memory broker and Celery's worker state; stop it first (``embedded_worker.stop()``).

Register steps with the module-level ``namel3ss_celery.step`` (or ``n3.step`` inside the test, before
``n3_worker`` starts), and list ``module:function`` modules in ``celery_config``'s
``namel3ss_celery = {"step_modules": [...]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from .extension import Namel3ssCelery


def pytest_configure(config: pytest.Config) -> None:
    """Load Celery's own fixtures (``celery.contrib.pytest``) unless pytest-celery, which loads them, did."""
    import celery.contrib.pytest as celery_fixtures

    manager = config.pluginmanager
    if not manager.has_plugin("celery") and not manager.is_registered(celery_fixtures):
        manager.register(celery_fixtures, "celery.contrib.pytest")


@pytest.fixture()
def n3(celery_app: Any) -> Iterator[Namel3ssCelery]:
    """namel3ss-celery on the test's Celery app; ``n3_worker`` (Celery's ``celery_worker``) runs its steps."""
    if str(celery_app.conf.broker_url or "").startswith("memory://"):
        # The memory transport polls; its default of 1s per empty poll makes every hop slow.
        options = dict(celery_app.conf.broker_transport_options or {})
        celery_app.conf.broker_transport_options = {"polling_interval": 0.005, **options}
    installed = Namel3ssCelery(celery_app, own_worker=False)
    installed.load_step_modules()
    try:
        yield installed
    finally:
        installed.close()


@pytest.fixture()
def n3_worker(n3: Namel3ssCelery, celery_worker_pool: str, celery_worker_parameters: Any) -> Iterator[Any]:
    """Celery's test worker (a thread of this process), started after ``n3`` registered its tasks."""
    with start_worker(n3.app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker
        # Asked to stop before start_worker joins it, the worker ends its loop's current wait (up to
        # 2 s on the memory transport) once instead of twice.
        worker.stop(in_sighandler=False, exitcode=0)
