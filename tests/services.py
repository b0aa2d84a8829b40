"""Where the tests and benchmarks find Redis and RabbitMQ: every URL and database number, in one place.

Each can be set from the environment (tox passes ``N3_TEST_*`` through); defaults in brackets:

    N3_TEST_REDIS_URL     [redis://127.0.0.1:6379/13]  the tests' Redis database, never flushed
    N3_TEST_REDIS_AUX_DB  [10]  a second database on the same server (the autoscale tests' broker)
    N3_TEST_AMQP_URL      [amqp://guest:guest@127.0.0.1:5672//]  RabbitMQ

The benchmarks use database ``BENCH_REDIS_DB`` (14) of the same Redis server, which they flush;
their own ``N3BENCH_BROKER_URL`` and ``N3BENCH_RESULT_BACKEND`` still win (bench/app.py).
When Redis or RabbitMQ is down, tests/conftest.py starts it on the host and port of these URLs.

Reading this module only reads the environment: no connection, no pytest. Worker subprocesses
import it too (tests/integration/steps.py), and inherit the variables from the test process.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_REDIS_AUX_DB = 10
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
BENCH_REDIS_DB = 14


def with_db(url: str, db: int) -> str:
    """``url`` (a ``redis://`` URL) on database ``db`` of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a broker URL points at (``default_port`` when it names none)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _db_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    if not raw.isdigit():
        raise ValueError(f"{name}={raw!r}: a Redis database number is a non-negative integer")
    return int(raw)


REDIS_URL = os.environ.get("N3_TEST_REDIS_URL") or DEFAULT_REDIS_URL
REDIS_AUX_URL = with_db(REDIS_URL, _db_from_env("N3_TEST_REDIS_AUX_DB", DEFAULT_REDIS_AUX_DB))
AMQP_URL = os.environ.get("N3_TEST_AMQP_URL") or DEFAULT_AMQP_URL
BENCH_REDIS_URL = with_db(REDIS_URL, BENCH_REDIS_DB)

REDIS_HOST, REDIS_PORT = host_port(REDIS_URL, 6379)
AMQP_HOST, AMQP_PORT = host_port(AMQP_URL, 5672)
