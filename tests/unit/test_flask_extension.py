"""``Namel3ssFlask``: state per Flask app, Celery built the Flask way or passed in, settings from the Flask
config. No broker: unreachable URLs, and the connections counted (tests/sockets.py), prove nothing connects;
runs use the embedded in-process worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from flask import Flask, current_app
from kombu.exceptions import OperationalError

from namel3ss_celery import Namel3ssCelery
from namel3ss_celery.errors import ConfigurationError
from namel3ss_celery.integrations.flask import Namel3ssFlask, settings_from_config
from namel3ss_celery.results import ParallelExecutionResult
from tests.sockets import connects

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: any connection attempt would fail
UNREACHABLE_ADDRESS = ("127.0.0.1", 1)


def flask_app(name: str = "shop", **config: Any) -> Flask:
    app = Flask(name)
    app.config.update(config)
    return app


@pytest.fixture(autouse=True)
def _no_env(clean_env: None) -> None:
    """No CELERY_* or NAMEL3SS_CELERY_* from the shell."""


@pytest.fixture
def closing() -> Iterator[list[Namel3ssCelery]]:
    """Namel3ssCelery objects to close (their embedded workers) after the test."""
    made: list[Namel3ssCelery] = []
    yield made
    for n3 in made:
        n3.close()


def test_init_app_builds_a_celery_app_from_the_flask_config_without_connecting() -> None:
    app = flask_app(CELERY={"broker_url": UNREACHABLE, "result_backend": UNREACHABLE, "task_ignore_result": True})
    with connects() as attempted:
        n3 = Namel3ssFlask().init_app(app)
    assert UNREACHABLE_ADDRESS not in attempted  # no connection attempt, counted rather than timed

    celery = app.extensions["celery"]
    with connects() as attempted, pytest.raises(OperationalError), celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=0)
    assert attempted.count(UNREACHABLE_ADDRESS) == 1  # the count above would have seen the app's attempt
    assert n3.app is celery
    assert app.extensions["namel3ss_celery"].n3 is n3
    assert celery.main == "shop"
    assert celery.conf.broker_url == UNREACHABLE
    assert celery.conf.task_ignore_result is True
    assert n3.settings.broker_url == UNREACHABLE
    assert not n3.settings.embedded


def test_tasks_of_the_built_celery_app_run_inside_the_flask_app_context() -> None:
    app = flask_app(CELERY={"broker_url": UNREACHABLE}, GREETING="hi")
    Namel3ssFlask(app)
    celery = app.extensions["celery"]

    def greeting() -> str:
        return f"{current_app.name}: {current_app.config['GREETING']}"

    task = celery.task(name="shop.greeting", shared=False)(greeting)
    assert task() == "shop: hi"  # called outside any app context: the task class pushed the app's


def test_n3_answers_for_the_app_of_the_current_context() -> None:
    ext = Namel3ssFlask()
    shop, blog = flask_app("shop"), flask_app("blog")
    shop_n3, blog_n3 = ext.init_app(shop), ext.init_app(blog)

    assert shop_n3 is not blog_n3
    assert shop_n3.app is not blog_n3.app
    assert (shop_n3.app.main, blog_n3.app.main) == ("shop", "blog")
    with shop.app_context():
        assert ext.n3 is shop_n3
        with blog.app_context():
            assert ext.n3 is blog_n3
        assert ext.n3 is shop_n3


def test_init_app_twice_returns_the_same_n3() -> None:
    ext = Namel3ssFlask()
    app = flask_app()
    first = ext.init_app(app)
    assert ext.init_app(app) is first
    assert Namel3ssFlask().init_app(app) is first  # another extension object sees the same state
    with pytest.raises(ConfigurationError, match="already has namel3ss-celery") as info:
        ext.init_app(app, celery=Celery("other", broker="memory://", set_as_current=False))
    assert info.value.setting == "init_app"


def test_n3_outside_an_app_context_says_what_to_do() -> None:
    ext = Namel3ssFlask(flask_app())
    with pytest.raises(ConfigurationError, match=r"app context.*with app\.app_context\(\)") as info:
        ext.n3  # noqa: B018 - the property is what is tested
    assert info.value.setting == "app_context"


def test_n3_for_an_app_never_initialised_says_what_to_do() -> None:
    ext = Namel3ssFlask(flask_app("shop"))
    with flask_app("blog").app_context(), pytest.raises(ConfigurationError, match=r"'blog'.*init_app\(app\)"):
        ext.n3  # noqa: B018


@pytest.mark.parametrize(
    ("config", "env", "field", "expected"),
    [
        ({"NAMEL3SS_CELERY_STEP_MODULES": "shop.steps, shop.more"}, {}, "step_modules", ("shop.steps", "shop.more")),
        (
            {"NAMEL3SS_CELERY_STEP_MODULES": ["shop.steps"]},
            {"NAMEL3SS_CELERY_STEP_MODULES": "env.steps"},
            "step_modules",
            ("shop.steps", "env.steps"),
        ),
        ({"NAMEL3SS_CELERY_PROGRAM": "flow.yaml"}, {"NAMEL3SS_CELERY_PROGRAM": "env.yaml"}, "program", "flow.yaml"),
        ({}, {"NAMEL3SS_CELERY_PROGRAM": "env.yaml"}, "program", "env.yaml"),
        ({"NAMEL3SS_CELERY_COORDINATION_URL": "redis://c:6379/3"}, {}, "coordination_url", "redis://c:6379/3"),
        ({"NAMEL3SS_CELERY_REGION": "eu"}, {}, "region", "eu"),
    ],
)
def test_namel3ss_keys_of_the_flask_config_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], env: dict[str, str], field: str, expected: Any
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = flask_app(CELERY={"broker_url": UNREACHABLE}, **config)
    n3 = Namel3ssFlask().init_app(app)
    assert getattr(n3.settings, field) == expected


def test_settings_from_config_reads_the_pool_this_process_serves() -> None:
    celery = Celery("theirs", broker=UNREACHABLE, set_as_current=False)
    config = {"NAMEL3SS_CELERY_POOL": "gpu", "NAMEL3SS_CELERY_PROGRAM": "flow.yaml", "SECRET_KEY": "x"}
    settings = settings_from_config(config, celery, environ={"NAMEL3SS_CELERY_POOL": "cpu"})
    assert (settings.pool, settings.program, settings.broker_url) == ("gpu", "flow.yaml", UNREACHABLE)


def test_settings_from_config_reads_where_events_are_matched_and_the_store_patience() -> None:
    celery = Celery("theirs", broker=UNREACHABLE, set_as_current=False)
    config = {"NAMEL3SS_CELERY_MATCH_EVENTS": "emitter", "NAMEL3SS_CELERY_STORE_PATIENCE": "5"}
    settings = settings_from_config(config, celery, environ={"NAMEL3SS_CELERY_STORE_PATIENCE": "9"})
    assert (settings.match_events, settings.store_patience) == ("emitter", 5.0)
    back = {"NAMEL3SS_CELERY_MATCH_EVENTS": "workers"}  # the default, given: it wins over the environment too
    assert settings_from_config(back, celery, environ={"NAMEL3SS_CELERY_MATCH_EVENTS": "emitter"}).match_events == (
        "workers"
    )


def test_an_unknown_namel3ss_key_is_refused() -> None:
    app = flask_app(NAMEL3SS_CELERY_STEPS="shop.steps")
    with pytest.raises(ConfigurationError, match="NAMEL3SS_CELERY_STEPS.*NAMEL3SS_CELERY_STEP_MODULES") as info:
        Namel3ssFlask(app)
    assert info.value.setting == "NAMEL3SS_CELERY_STEPS"
    assert "namel3ss_celery" not in app.extensions


def test_an_rpc_result_backend_is_refused() -> None:
    app = flask_app(CELERY={"broker_url": UNREACHABLE, "result_backend": "rpc://"})
    with pytest.raises(ConfigurationError) as info:
        Namel3ssFlask(app)
    assert info.value.setting == "result_backend"


def test_no_broker_anywhere_means_the_embedded_default() -> None:
    n3 = Namel3ssFlask().init_app(flask_app())
    assert n3.app.conf.broker_url == "memory://"
    assert n3.settings.embedded


def test_a_celery_app_passed_in_is_used_as_it_is() -> None:
    celery = Celery("theirs", broker=UNREACHABLE, backend=UNREACHABLE, set_as_current=False)
    plain_task = celery.Task
    app = flask_app(NAMEL3SS_CELERY_PROGRAM="flow.yaml")
    n3 = Namel3ssFlask(app, celery=celery).init_app(app)

    assert n3.app is celery
    assert celery.Task is plain_task  # its task class is its own
    assert app.extensions["celery"] is celery
    assert n3.settings.program == "flow.yaml"
    with pytest.raises(ConfigurationError, match="already has namel3ss-celery installed"):
        Namel3ssFlask().init_app(flask_app("blog"), celery=celery)  # one Flask app per Celery app


def test_steps_run_on_a_worker_inside_the_app_context_of_a_built_celery_app(closing: list[Namel3ssCelery]) -> None:
    app = flask_app("shop", GREETING="welcome")
    n3 = Namel3ssFlask().init_app(app)
    closing.append(n3)

    @n3.step("flask_greeting")
    def flask_greeting(step: dict[str, Any], context: dict[str, Any]) -> str:
        return f"{current_app.name}: {current_app.config['GREETING']}"

    result = n3.dispatch({"name": "b", "steps": [{"name": "g", "target": "flask_greeting"}]}).get(timeout=30)
    assert isinstance(result, ParallelExecutionResult)
    assert result.final_result == {"g": "shop: welcome"}
    assert result.results[0].metadata["executed_on"] == "celery"  # the in-process worker ran it, not eager mode


def test_steps_run_on_a_worker_inside_the_app_context_of_a_celery_app_passed_in(
    closing: list[Namel3ssCelery],
) -> None:
    celery = Celery("theirs", broker="memory://", backend="cache+memory://", set_as_current=False)
    celery.conf.broker_transport_options = {"polling_interval": 0.005}
    app = flask_app("blog", GREETING="hello")
    n3 = Namel3ssFlask().init_app(app, celery=celery)
    closing.append(n3)

    @n3.step("flask_greeting")
    async def flask_greeting(step: dict[str, Any], context: dict[str, Any]) -> str:
        return f"{current_app.name}: {current_app.config['GREETING']}"

    result = n3.dispatch({"name": "b", "steps": [{"name": "g", "target": "flask_greeting"}]}).get(timeout=30)
    assert result.overall_status == "completed", result.error_message
    assert result.final_result == {"g": "blog: hello"}
