"""Where the tests and benchmarks find Redis and RabbitMQ: every URL and database number, in one place.

Each can be set from the environment (tox passes ``N3_TEST_*`` through); defaults in brackets:

    N3_TEST_REDIS_URL     [redis://127.0.0.1:6379/13]  the tests' Redis database, never flushed
    N3_TEST_REDIS_AUX_DB  [10]  a second database on the same server (the autoscale tests' broker)
    N3_TEST_AMQP_URL      [amqp://guest:guest@127.0.0.1:5672//]  RabbitMQ
    N3_TEST_REDIS_SECOND_DBS  [15,1]  the store and aux databases of the second test process

The suite runs in two processes (pytest-xdist's ``-n 2``, set in setup.cfg): the first (``gw0``, or a
run without xdist) uses the databases above, the second (``gw1``) those of
``N3_TEST_REDIS_SECOND_DBS``. Each test process has a coordination store of its own, as each
deployment does (README: a watchdog finishes the launches of every run in its store through its
own broker). Queues and run ids are unique per test, so both share RabbitMQ's vhost.

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
DEFAULT_SECOND_DBS = (15, 1)  # the second test process's store and aux databases
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


def _db_number(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise ValueError(f"{name}={raw!r}: a Redis database number is a non-negative integer")
    return int(raw)


def process_index() -> int:
    """Which test process this is: 0 without pytest-xdist or in ``gw0``, 1 in ``gw1``.

    pytest-xdist sets ``PYTEST_XDIST_WORKER`` in each test process; the worker processes a test starts
    inherit it, so they find the same databases.
    """
    name = os.environ.get("PYTEST_XDIST_WORKER") or "gw0"
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else -1
    if index not in (0, 1):
        raise ValueError(f"PYTEST_XDIST_WORKER={name!r}: the tests have databases for two test processes (-n 2)")
    return index


def _databases() -> tuple[str, str]:
    """The store URL and the aux URL of this test process."""
    url = os.environ.get("N3_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    aux = _db_number("N3_TEST_REDIS_AUX_DB", os.environ.get("N3_TEST_REDIS_AUX_DB") or str(DEFAULT_REDIS_AUX_DB))
    if process_index() == 0:
        return url, with_db(url, aux)
    raw = os.environ.get("N3_TEST_REDIS_SECOND_DBS") or ",".join(map(str, DEFAULT_SECOND_DBS))
    store, _, second_aux = raw.partition(",")
    return (
        with_db(url, _db_number("N3_TEST_REDIS_SECOND_DBS", store)),
        with_db(url, _db_number("N3_TEST_REDIS_SECOND_DBS", second_aux)),
    )


REDIS_URL, REDIS_AUX_URL = _databases()
AMQP_URL = os.environ.get("N3_TEST_AMQP_URL") or DEFAULT_AMQP_URL
BENCH_REDIS_URL = with_db(REDIS_URL, BENCH_REDIS_DB)

REDIS_HOST, REDIS_PORT = host_port(REDIS_URL, 6379)
AMQP_HOST, AMQP_PORT = host_port(AMQP_URL, 5672)
