"""Settings from a mapping, the environment and a Celery app; which coordination store is used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import celery
import pytest

from namel3ss_celery.errors import ConfigurationError
from namel3ss_celery.settings import DEFAULT_EXPIRES, Settings, split_modules


@pytest.fixture
def app() -> Iterator[celery.Celery]:
    app = celery.Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, Settings()),
        (
            {"CELERY_BROKER_URL": "redis://h/0", "CELERY_RESULT_BACKEND": "redis://h/1"},
            Settings(broker_url="redis://h/0", result_backend="redis://h/1"),
        ),
        (
            {"broker_url": "amqp://", "result_backend": "redis://"},
            Settings(broker_url="amqp://", result_backend="redis://"),
        ),
        ({"broker_url": "amqp://a", "CELERY_BROKER_URL": "amqp://b"}, Settings(broker_url="amqp://a")),
        (
            {"NAMEL3SS_CELERY_PROGRAM": "p.yaml", "NAMEL3SS_CELERY_COORDINATION_URL": "redis://c"},
            Settings(program="p.yaml", coordination_url="redis://c"),
        ),
        ({"CELERY_BROKER_URL": "", "NAMEL3SS_CELERY_PROGRAM": None}, Settings()),
        ({"result_expires": 60}, Settings(result_expires=60)),
        ({"result_expires": "90"}, Settings(result_expires=90)),
        ({"result_expires": timedelta(hours=1)}, Settings(result_expires=3600)),
        ({"UNRELATED": "x"}, Settings()),
    ],
)
def test_from_mapping(data: dict[str, Any], expected: Settings) -> None:
    assert Settings.from_mapping(data) == expected


@pytest.mark.parametrize(
    ("value", "modules"),
    [
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        (" a , b.c ,, ", ("a", "b.c")),
        (["a", " b "], ("a", "b")),
        (("x",), ("x",)),
    ],
)
def test_step_modules_are_split(value: Any, modules: tuple[str, ...]) -> None:
    assert split_modules(value) == modules
    assert Settings.from_mapping({"NAMEL3SS_CELERY_STEP_MODULES": value}).step_modules == modules
    assert Settings.from_mapping({"step_modules": value}).step_modules == modules


def test_from_env_reads_the_given_environment() -> None:
    settings = Settings.from_env({"CELERY_BROKER_URL": "redis://h", "NAMEL3SS_CELERY_STEP_MODULES": "a,b"})
    assert settings.broker_url == "redis://h"
    assert settings.step_modules == ("a", "b")


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_PROGRAM", "from-env.yaml")
    assert Settings.from_env().program == "from-env.yaml"


def test_from_app_takes_broker_backend_and_expiry_from_the_app(app: celery.Celery) -> None:
    app.conf.result_expires = timedelta(minutes=5)
    settings = Settings.from_app(
        app, environ={"NAMEL3SS_CELERY_STEP_MODULES": "env_mod", "CELERY_BROKER_URL": "amqp://x"}
    )
    assert settings.broker_url == "memory://"
    assert settings.result_backend == "cache+memory://"
    assert settings.result_expires == 300
    assert settings.step_modules == ("env_mod",)
    assert settings.coordination() == "memory://"


def test_from_app_own_config_wins_over_the_environment(app: celery.Celery) -> None:
    app.conf.namel3ss_celery = {"step_modules": "conf_mod, shared", "NAMEL3SS_CELERY_PROGRAM": "conf.yaml"}
    environ = {
        "NAMEL3SS_CELERY_STEP_MODULES": "shared,env_mod",
        "NAMEL3SS_CELERY_PROGRAM": "env.yaml",
        "NAMEL3SS_CELERY_COORDINATION_URL": "redis://env",
    }
    settings = Settings.from_app(app, environ=environ)
    assert settings.step_modules == ("conf_mod", "shared", "env_mod")
    assert settings.program == "conf.yaml"
    assert settings.coordination_url == "redis://env"


def test_from_app_without_result_expires_uses_the_default(app: celery.Celery) -> None:
    app.conf.result_expires = None
    assert Settings.from_app(app, environ={}).result_expires == DEFAULT_EXPIRES


@pytest.mark.parametrize(
    ("broker", "backend", "explicit", "store"),
    [
        ("amqp://", "rpc://", "redis://coord/2", "redis://coord/2"),
        ("amqp://", "redis://backend/1", None, "redis://backend/1"),
        ("redis://broker/0", "redis://backend/1", None, "redis://backend/1"),
        ("redis://broker/0", None, None, "redis://broker/0"),
        ("redis://broker/0", "db+sqlite:///r.db", None, "redis://broker/0"),
        ("amqp://", "rediss://secure/1", None, "rediss://secure/1"),
        ("memory://", "cache+memory://", None, "memory://"),
        (None, None, None, "memory://"),
        ("memory://", "redis://backend/1", None, "redis://backend/1"),
    ],
)
def test_coordination_store_choice(broker: str | None, backend: str | None, explicit: str | None, store: str) -> None:
    settings = Settings(broker_url=broker, result_backend=backend, coordination_url=explicit)
    assert settings.coordination() == store


@pytest.mark.parametrize(
    ("broker", "backend"), [("amqp://", None), ("amqp://", "rpc://"), ("sqs://", "db+sqlite:///r.db")]
)
def test_no_redis_for_a_real_broker_is_a_configuration_error(broker: str, backend: str | None) -> None:
    with pytest.raises(ConfigurationError, match="NAMEL3SS_CELERY_COORDINATION_URL") as info:
        Settings(broker_url=broker, result_backend=backend).coordination()
    assert info.value.setting == "NAMEL3SS_CELERY_COORDINATION_URL"


@pytest.mark.parametrize(
    ("broker", "embedded"),
    [(None, True), ("memory://", True), ("memory://localhost/", True), ("redis://", False), ("amqp://", False)],
)
def test_embedded(broker: str | None, embedded: bool) -> None:
    assert Settings(broker_url=broker).embedded is embedded


def test_with_step_modules_adds_without_duplicates() -> None:
    settings = Settings(step_modules=("a", "b")).with_step_modules(("b", "c"))
    assert settings.step_modules == ("a", "b", "c")


def test_store_patience_comes_from_the_environment_and_a_bad_one_names_its_variable() -> None:
    assert Settings.from_env({}).store_patience == 60.0
    assert Settings.from_env({"NAMEL3SS_CELERY_STORE_PATIENCE": "2.5"}).store_patience == 2.5
    for bad in ("soon", "0", "-1"):
        with pytest.raises(ConfigurationError, match="store_patience") as caught:
            Settings.from_env({"NAMEL3SS_CELERY_STORE_PATIENCE": bad})
        assert caught.value.setting == "NAMEL3SS_CELERY_STORE_PATIENCE"


def test_events_are_matched_on_the_workers_unless_the_emitter_is_asked_to() -> None:
    assert Settings.from_env({}).match_events == "workers"
    assert Settings.from_env({"NAMEL3SS_CELERY_MATCH_EVENTS": "Emitter"}).match_events == "emitter"
    app = celery.Celery("settings", broker="memory://", set_as_current=False)
    app.conf.namel3ss_celery = {"match_events": "emitter"}
    assert Settings.from_app(app, {}).match_events == "emitter"
    assert Settings.from_app(app, {"NAMEL3SS_CELERY_MATCH_EVENTS": "workers"}).match_events == "emitter"
    app.conf.namel3ss_celery = {"match_events": "workers", "store_patience": 60}  # the defaults, given: they win
    env = {"NAMEL3SS_CELERY_MATCH_EVENTS": "emitter", "NAMEL3SS_CELERY_STORE_PATIENCE": "5"}
    assert (Settings.from_app(app, env).match_events, Settings.from_app(app, env).store_patience) == ("workers", 60.0)
    with pytest.raises(ConfigurationError, match="'workers' or 'emitter', not 'here'") as caught:
        Settings.from_env({"NAMEL3SS_CELERY_MATCH_EVENTS": "here"})
    assert caught.value.setting == "NAMEL3SS_CELERY_MATCH_EVENTS"
