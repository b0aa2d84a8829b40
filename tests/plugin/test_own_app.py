"""The plugin on a user's own app: with ``celery_app`` overridden to return it, ``n3`` is the app's own
``Namel3ssCelery``, so the steps registered on it with ``@n3.step`` run on the test worker."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import ConfigurationError, Namel3ssCelery

pytest_plugins = ["namel3ss_celery.testing"]


@pytest.fixture()
def celery_app() -> Celery:
    from tests.plugin.own_app import app

    return app


def test_n3_is_the_apps_own_and_runs_the_steps_registered_on_it(n3: Namel3ssCelery, n3_worker: Any) -> None:
    from tests.plugin import own_app

    assert n3 is own_app.n3
    run = n3.dispatch({"name": "triples", "steps": [{"target": "own_triple", "n": n} for n in range(3)]})
    result = run.get(timeout=20)
    assert result.overall_status == "completed"
    assert result.final_result == {"step_0": 0, "step_1": 3, "step_2": 6}


def test_the_apps_own_is_left_open_after_the_test(n3: Namel3ssCelery, n3_worker: Any) -> None:
    """Made by the user's module, not by the fixture: the next test takes it as it is."""
    result = n3.dispatch({"name": "again", "steps": [{"target": "own_triple", "n": 5}]}).get(timeout=20)
    assert result.final_result == {"step_0": 15}


def test_an_own_instance_that_would_start_its_embedded_worker_is_refused() -> None:
    from namel3ss_celery.testing import installed_on  # the plugin module, loaded by pytest_plugins above

    app = Celery("embedded_own", broker="memory://", backend="cache+memory://")
    own = Namel3ssCelery(app)  # own_worker defaults to True: on the memory broker it would start its own
    try:
        with pytest.raises(ConfigurationError, match=r"own_worker=False"):
            installed_on(app)
    finally:
        own.close()
