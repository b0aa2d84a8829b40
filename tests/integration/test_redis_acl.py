"""Redis with ACLs, as the README's security section configures them: the default user off, and a user of
the adapter's and Celery's allowed the commands the README lists on the keys it lists, and nothing else. A
worker, the result backend, the coordination store and the event stream on that user complete a workflow
and a race; a client without credentials is refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.private_redis import free_port, redis_server

from .conftest import run_a_workflow_and_a_race, start_cluster, stop_cluster

pytestmark = pytest.mark.integration

# The README's list (Security, "TLS and ACLs"); the tests' queues are n3test-*.
COMMANDS = (
    "+@hash +@list +@set +@sortedset +@string +@keyspace +@scripting +@connection +@stream +@transaction +@pubsub +time"
)
KEYS = "~n3:* ~celery* ~_kombu* ~unacked* ~*.reply.celery.pidbox* ~*.dq2* ~n3test-*"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test's own with the README's ACL; the URL of its adapter user."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: no Redis with ACLs to start")
    folder = tmp_path_factory.mktemp("acl")
    port = free_port()
    config = folder / "redis.conf"
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {folder}\n'
        "user default off\n"
        f"user n3worker on >s3cret {KEYS} &* {COMMANDS}\n"
    )
    url = f"redis://n3worker:s3cret@127.0.0.1:{port}/0"
    with redis_server([str(config)], url, f"ACLs on port {port}"):
        yield url


def test_a_client_without_credentials_is_refused(acl_redis: str) -> None:
    anonymous = redis.Redis.from_url(acl_redis.replace("n3worker:s3cret@", ""), socket_connect_timeout=2)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("n3:probe", "1")
    finally:
        anonymous.close()


def test_runs_complete_for_a_user_with_the_readmes_acl(
    acl_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMEL3SS_CELERY_COORDINATION_URL", raising=False)  # the store is the backend's Redis
    cluster = start_cluster(acl_redis, acl_redis, "prefork", tmp_path)
    try:
        run_a_workflow_and_a_race(cluster.n3)
        log = cluster.worker.log()
    finally:
        stop_cluster(cluster)
    assert "NOPERM" not in log, log[-3000:]
