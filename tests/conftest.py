"""Shared fixtures: the real brokers on this machine, and real Celery worker processes.

Redis and RabbitMQ are used where they run; where they do not, they are
started when their binaries exist, on the host and port of their URLs
(tests/services.py, set from N3_TEST_* variables). Outside CI, with neither
possible, the tests that need them are skipped with the reason; with CI=true
they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import services
from tests.services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.5)
    return False


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing broker is a failure)")
    pytest.skip(reason)


def _ensure_redis() -> None:
    if _port_open(REDIS_HOST, REDIS_PORT):
        return
    if shutil.which("redis-server") is None:
        _unavailable(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} and redis-server is not installed")
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            REDIS_HOST,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
        timeout=30,
    )
    if not _wait_port(REDIS_HOST, REDIS_PORT, 15):
        _unavailable("redis-server was started but does not answer")


def _ensure_rabbitmq() -> None:
    if _port_open(AMQP_HOST, AMQP_PORT):
        return
    if shutil.which("rabbitmq-server") is None:
        _unavailable(f"RabbitMQ is not running on {AMQP_HOST}:{AMQP_PORT} and rabbitmq-server is not installed")
    listen = {"RABBITMQ_NODE_IP_ADDRESS": AMQP_HOST, "RABBITMQ_NODE_PORT": str(AMQP_PORT)}
    subprocess.run(["rabbitmq-server", "-detached"], env={**os.environ, **listen}, check=False, timeout=60)
    if not _wait_port(AMQP_HOST, AMQP_PORT, 90):
        _unavailable("rabbitmq-server was started but does not answer")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The tests' Redis database (N3_TEST_REDIS_URL, db 13 by default).

    Never flushed: every test run uses its own queues and run ids.
    """
    _ensure_redis()
    return services.REDIS_URL


@pytest.fixture(scope="session")
def redis_aux_url(redis_url: str) -> str:
    """A second database on the same Redis server (N3_TEST_REDIS_AUX_DB, db 10 by default)."""
    return services.REDIS_AUX_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """RabbitMQ (N3_TEST_AMQP_URL, guest on 127.0.0.1:5672 by default)."""
    _ensure_rabbitmq()
    return services.AMQP_URL


@pytest.fixture(scope="session")
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def close_broker_pools() -> Iterator[None]:
    """Close kombu's connection and producer pools (shared by every app of a URL) once, at the end."""
    yield
    import kombu.pools

    kombu.pools.reset()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CELERY_* or NAMEL3SS_CELERY_* from the calling shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith(("CELERY_", "NAMEL3SS_CELERY_")):
            monkeypatch.delenv(key)
    yield
