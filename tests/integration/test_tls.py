"""Redis over TLS, as the README's security section configures it: a worker, the result backend and the
coordination store all on a ``rediss://`` URL that verifies the server against a CA, and a run of each
kind completing there. A client that does not trust that CA is refused."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from tests.private_redis import free_port, redis_server

from .conftest import run_a_workflow_and_a_race, start_cluster, stop_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server of the test's own that speaks TLS only; its ``rediss://`` URL and the CA file."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: no TLS Redis to start")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file)]
    args += ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca_file}"
    with redis_server(args, url, f"TLS on port {port}"):
        yield url, ca_file


def test_a_client_that_does_not_trust_the_servers_ca_is_refused(tls_redis: tuple[str, Path]) -> None:
    url, _ca = tls_redis
    untrusting = redis.Redis.from_url(url.split("&ssl_ca_certs=")[0], socket_connect_timeout=2)
    try:
        with pytest.raises(redis.ConnectionError) as refused:
            untrusting.ping()
    finally:
        untrusting.close()
    assert isinstance(refused.value.__context__, ssl.SSLError) or "certificate" in str(refused.value).lower()


def test_runs_complete_on_a_worker_whose_broker_backend_and_store_speak_tls(
    tls_redis: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ca = tls_redis
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)  # the store is the backend's Redis
    cluster = start_cluster(url, url, "prefork", tmp_path)
    try:
        assert cluster.n3.settings.coordination().startswith("rediss://")
        run_a_workflow_and_a_race(cluster.n3)
    finally:
        stop_cluster(cluster)
