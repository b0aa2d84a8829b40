"""RabbitMQ over TLS, as the README's security section configures it: a worker whose broker is an ``amqps://``
URL on a RabbitMQ node of the test's own that listens for TLS only and requires client certificates, with
``broker_use_ssl`` naming the CA, checking the server's name and giving a client certificate; the result
backend and the coordination store on the tests' Redis. A block runs there to its end. A client that does
not trust the CA (an ``amqps://`` URL without ``broker_use_ssl`` among them), presents no certificate, expects
another server name or speaks plain AMQP to the TLS port is refused by ``dispatch`` with
``BrokerUnavailable``, before anything is published or recorded."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

import tests.integration.steps  # noqa: F401 - the steps the plans name
from namel3ss_celery import BrokerUnavailable, Namel3ssCelery, ParallelExecutionResult, Settings
from tests.conftest import IN_CI
from tests.private_rabbit import PrivateRabbit, available, erlang_has_ssl

from .app import make_app
from .conftest import STEP_MODULES, start_cluster, stop_cluster

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsRabbit:
    """The node, and the ``broker_use_ssl`` the README gives a worker of it (CA, server name, client cert)."""

    node: PrivateRabbit
    use_ssl: dict[str, Any]


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing broker is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def tls_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbit]:
    """A private RabbitMQ node that speaks AMQP over TLS only, started once for the module."""
    if not available():
        _missing("rabbitmq-server is not installed: no private RabbitMQ to listen for TLS")
    if not erlang_has_ssl():
        _missing("the Erlang that runs rabbitmq-server has no ssl application (erlang-ssl): no TLS listener")
    node = PrivateRabbit(tls=True)
    try:
        cert, key = node.client_cert("worker", tmp_path_factory.mktemp("client"))
        use_ssl = {
            "ca_certs": str(node.ca_file),
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": None,  # kombu checks the certificate against the URL's host
            "certfile": str(cert),
            "keyfile": str(key),
        }
        yield TlsRabbit(node, use_ssl)
    finally:
        node.stop()
        node.remove()


def test_a_block_completes_on_a_worker_whose_broker_is_amqps(
    tls_rabbit: TlsRabbit, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)  # the store is the backend's Redis
    assert tls_rabbit.node.url.startswith("amqps://")
    cluster = start_cluster(tls_rabbit.node.url, redis_url, "prefork", tmp_path, broker_use_ssl=tls_rabbit.use_ssl)
    try:
        result = cluster.n3.dispatch(
            {
                "name": "over_tls",
                "strategy": "collect",
                "steps": [
                    {"name": "where", "target": "whoami"},
                    {"name": "said", "target": "echo", "value": "sealed"},
                    {"name": "added", "target": "tests.integration.steps:add_one", "value": 41},
                ],
            }
        ).get(timeout=60)
    finally:
        log = cluster.worker.log()
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", f"{result.error_message}\n{log[-6000:]}"
    outcomes = {name: entry["result"] for name, entry in result.final_result.items()}
    assert outcomes["said"] == "sealed" and outcomes["added"] == 42
    assert outcomes["where"]["hostname"] == cluster.worker.hostname  # it travelled through the TLS broker
    assert f"amqps://guest:**@127.0.0.1:{tls_rabbit.node.port}//" in log  # the worker's banner names it


# The server hangs up on a client without a certificate, or speaking plain AMQP: the client reads its alert,
# or only the closed connection, whichever comes first.
HUNG_UP = ("CERTIFICATE_REQUIRED", "EOF occurred", "Connection reset by peer", "unexpectedly closed", "Broken pipe")


def refused_clients(rabbit: TlsRabbit) -> dict[str, tuple[str, dict[str, Any] | None, tuple[str, ...]]]:
    """Each refused client: its broker URL, its ``broker_use_ssl`` and what its error says (one of)."""
    url, options = rabbit.node.url, rabbit.use_ssl
    without_ca = {key: value for key, value in options.items() if key != "ca_certs"}
    without_cert = {key: value for key, value in options.items() if key not in ("certfile", "keyfile")}
    return {
        "the CA is not trusted": (url, without_ca, ("CERTIFICATE_VERIFY_FAILED",)),
        "an amqps URL alone": (url, None, ("CERTIFICATE_VERIFY_FAILED",)),  # the system's CAs, no client certificate
        "no client certificate": (url, without_cert, HUNG_UP),
        "another server name": (url, {**options, "server_hostname": "rabbit.example"}, ("Hostname mismatch",)),
        "plain AMQP on the TLS port": (url.replace("amqps://", "amqp://", 1), None, HUNG_UP),
    }


@pytest.mark.parametrize(
    "case",
    [
        "the CA is not trusted",
        "an amqps URL alone",
        "no client certificate",
        "another server name",
        "plain AMQP on the TLS port",
    ],
)
def test_a_client_the_tls_listener_refuses_gets_broker_unavailable_from_dispatch(
    case: str, tls_rabbit: TlsRabbit, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)
    broker, use_ssl, reasons = refused_clients(tls_rabbit)[case]
    queue = f"n3test-{uuid.uuid4().hex[:8]}"
    app = make_app(broker, redis_url, queue, broker_use_ssl=use_ssl)
    # kombu pools connections by URL and transport options, not by TLS options: in one process, a client
    # with the same URL as an earlier one would reuse that one's connections (and TLS settings)
    app.conf.broker_transport_options = {"client_properties": {"connection_name": f"n3test refused: {case}"}}
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,)))
    run_id = uuid.uuid4().hex
    try:
        plan = n3.plan({"name": "b", "steps": [{"target": "echo", "value": 1}] * 2})
        with pytest.raises(BrokerUnavailable) as refused:
            n3.publish(plan, run_id=run_id)  # dispatch's second half, under an id the test knows
        assert n3.store.run_record(run_id) is None
    finally:
        n3.close()
        app.close()
        app.backend.client.close()
    message = str(refused.value)
    assert "cannot reach the broker" in message and "nothing was published or recorded" in message
    assert f"127.0.0.1:{tls_rabbit.node.port}" in message and "guest:**@" in message and ":guest@" not in message
    assert any(reason in message for reason in reasons), message
    with Connection(tls_rabbit.node.url, ssl=dict(tls_rabbit.use_ssl)) as trusted:
        channel = trusted.channel()
        with pytest.raises(trusted.channel_errors):  # 404: the client never declared its queue, let alone sent
            channel.queue_declare(queue, passive=True)
