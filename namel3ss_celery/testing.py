"""A pytest plugin for your own tests: ``pytest_plugins = ["namel3ss_celery.testing"]``.

Fixtures, on Celery's own test fixtures (``celery_app``, ``celery_config``, ``celery_worker_pool`` and
``celery_worker_parameters`` from ``celery.contrib.pytest``, which this plugin loads, with or without
pytest-celery; pytest-celery's ``celery_worker`` needs Docker, so the worker here is Celery's embedded
test worker):

- ``n3``: namel3ss-celery on ``celery_app``. When your own ``celery_app`` fixture returns an app that has
  a ``Namel3ssCelery`` already (yours, with the steps you registered with ``@n3.step``; it is
  ``app.namel3ss``), ``n3`` is that one; otherwise a new one, installed for the test (your
  ``celery_config`` applies; by default the in-memory broker and result backend, and an in-memory
  coordination store), and closed after it.
- ``n3_worker``: Celery's test worker (``celery.contrib.testing.worker.start_worker``, a thread of this
  process) on that app, started after ``n3`` registered its steps: dispatched runs run on it, as on a
  real worker (no eager mode: the same messages, settles and outcomes). Its pool is
  ``celery_worker_pool`` (``solo`` unless you override it: a race needs ``"threads"`` and a
  ``celery_worker_parameters`` of ``{"concurrency": 4}``, so its steps run at once)::

      def test_summaries(n3, n3_worker):
          run = n3.dispatch({"name": "b", "strategy": "race", "steps": [...]})
          assert run.get(timeout=10).overall_status == "completed"

Not while an embedded default worker (``Namel3ssCelery()`` with no broker) runs in the same process: both
use the process's memory broker and Celery's worker state; stop it first (``embedded_worker.stop()``). For
the same reason a ``Namel3ssCelery`` of your own on the in-memory broker must be made with
``own_worker=False`` for ``n3`` to take it.

Register steps on your own ``Namel3ssCelery`` (``@n3.step``), with the module-level
``namel3ss_celery.step`` (every instance sees those), or with ``n3.step`` inside the test, before
``n3_worker`` starts; ``module:function`` targets need their modules listed in ``celery_config``'s
``namel3ss_celery = {"step_modules": [...]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from .errors import ConfigurationError
from .extension import Namel3ssCelery

PING = "n3.testing.ping"  # what n3_worker checks its test worker with, on the test's own app
PING_TIMEOUT = 10.0


def pytest_configure(config: pytest.Config) -> None:
    """Load Celery's own fixtures (``celery.contrib.pytest``) unless pytest-celery, which loads them, did."""
    import celery.contrib.pytest as celery_fixtures

    manager = config.pluginmanager
    if not manager.has_plugin("celery") and not manager.is_registered(celery_fixtures):
        manager.register(celery_fixtures, "celery.contrib.pytest")


def installed_on(app: Any) -> tuple[Namel3ssCelery, bool]:
    """The ``Namel3ssCelery`` of ``app`` (``app.namel3ss``), or a new one for the test worker; and whether it
    is new (the fixture that made it closes it).

    Raises:
        ConfigurationError: ``app``'s own ``Namel3ssCelery`` would start its embedded worker beside the test
            worker (it was made on the in-memory broker without ``own_worker=False``).
    """
    existing = getattr(app, "namel3ss", None)
    if isinstance(existing, Namel3ssCelery):
        if existing.embedded_worker is not None:
            raise ConfigurationError(
                "the Namel3ssCelery of the test's celery_app would start an embedded worker beside n3_worker: "
                "make it with Namel3ssCelery(app, own_worker=False) for tests on the in-memory broker",
                setting="own_worker",
            )
        return existing, False
    return Namel3ssCelery(app, own_worker=False), True


@pytest.fixture()
def n3(celery_app: Any) -> Iterator[Namel3ssCelery]:
    """namel3ss-celery on the test's Celery app (the app's own, if it has one); ``n3_worker`` runs its steps."""
    if str(celery_app.conf.broker_url or "").startswith("memory://"):
        # The memory transport polls; its default of 1s per empty poll makes every hop slow.
        options = dict(celery_app.conf.broker_transport_options or {})
        celery_app.conf.broker_transport_options = {"polling_interval": 0.005, **options}
    installed, made_here = installed_on(celery_app)
    installed.load_step_modules()
    try:
        yield installed
    finally:
        if made_here:
            installed.close()


@pytest.fixture()
def n3_worker(n3: Namel3ssCelery, celery_worker_pool: str, celery_worker_parameters: Any) -> Iterator[Any]:
    """Celery's test worker (a thread of this process), started after ``n3`` registered its tasks."""
    # Celery's own ping check sends its shared ``celery.ping`` through the current app, which your own app
    # is not: the check here pings through ``n3``'s app, whichever it is.
    ping = n3.app.tasks.get(PING) or n3.app.task(name=PING, shared=False)(_pong)
    parameters = {"perform_ping_check": False, **celery_worker_parameters}
    with start_worker(n3.app, pool=celery_worker_pool, **parameters) as worker:
        ping.delay().get(timeout=PING_TIMEOUT)  # it consumes: what the test dispatches reaches it
        yield worker
        # Asked to stop before start_worker joins it, the worker ends its loop's current wait (up to
        # 2 s on the memory transport) once instead of twice.
        worker.stop(in_sighandler=False, exitcode=0)


def _pong() -> str:
    return "pong"
