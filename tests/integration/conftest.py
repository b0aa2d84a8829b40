"""A user's app with namel3ss-celery, and real workers for it, on each broker and pool."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery, Settings

from .app import make_app
from .workers import WorkerProcess

STEP_MODULES = "tests.integration.steps"


@dataclass
class Cluster:
    """The test process's app and n3, and the worker serving them."""

    app: Any
    n3: Namel3ssCelery
    worker: WorkerProcess
    queue: str
    env: dict[str, str]


def deployment(
    broker: str,
    backend: str,
    ignore_result: bool = False,
    acks_late: bool = False,
    broker_use_ssl: dict[str, Any] | None = None,
) -> tuple[Any, Namel3ssCelery, str, dict[str, str]]:
    """The test process's app and n3 on a queue of their own, and the environment a worker of theirs needs."""
    import tests.integration.steps  # noqa: F401 - the test process knows the same steps as its workers

    queue = f"n3test-{uuid.uuid4().hex[:8]}"
    env = {
        "N3_TEST_BROKER": broker,
        "N3_TEST_BACKEND": backend,
        "N3_TEST_QUEUE": queue,
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
        "N3_TEST_IGNORE_RESULT": "1" if ignore_result else "0",
        "N3_TEST_ACKS_LATE": "1" if acks_late else "0",
        "N3_TEST_BROKER_USE_SSL": json.dumps(broker_use_ssl) if broker_use_ssl is not None else "",
    }
    app = make_app(broker, backend, queue, ignore_result, acks_late, broker_use_ssl)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app), step_modules=(STEP_MODULES,)))
    return app, n3, queue, env


def start_cluster(
    broker: str,
    backend: str,
    pool: str,
    log_dir: Path,
    concurrency: int = 2,
    ignore_result: bool = False,
    acks_late: bool = False,
    worker_args: list[str] | None = None,
    broker_use_ssl: dict[str, Any] | None = None,
) -> Cluster:
    app, n3, queue, env = deployment(broker, backend, ignore_result, acks_late, broker_use_ssl)
    worker = WorkerProcess(
        "tests.integration.app",
        env,
        log_dir,
        pool=pool,
        concurrency=concurrency,
        queues=[queue, f"{queue}.reports"],
        extra_args=worker_args,
    )
    try:
        worker.wait_ready(app)
    except BaseException:
        worker.stop()
        raise
    return Cluster(app, n3, worker, queue, env)


def run_a_workflow_and_a_race(n3: Namel3ssCelery) -> None:
    """A two-block workflow and a race complete on ``n3``'s worker, the race won by its quick step.

    The race runs after the workflow, on warm pool processes; its loser is slow enough never to win on a
    loaded machine, and terminated once the quick one won (a loser that started would run on otherwise).
    """
    from namel3ss_celery.results import ParallelExecutionResult, WorkflowResult

    workflow = n3.dispatch(
        {
            "parallel_blocks": [
                {"name": "first", "steps": [{"target": "echo", "value": 1}] * 3},
                {
                    "name": "last",
                    "depends_on": ["first"],
                    "steps": [{"target": "tests.integration.steps:add_one", "value": 1}],
                },
            ]
        }
    ).get(timeout=60)
    assert isinstance(workflow, WorkflowResult) and workflow.overall_status == "completed", workflow.error_message
    race = n3.dispatch(
        {
            "name": "fastest",
            "strategy": "race",
            "terminate_losers": True,
            "steps": [{"target": "echo", "value": "won"}, {"target": "sleep", "seconds": 30}],
        }
    ).get(timeout=60)
    assert isinstance(race, ParallelExecutionResult) and race.overall_status == "completed"
    assert race.final_result == "won"


DIES_WHILE_PUBLISHING = """
import os, sys
import tests.integration.steps
from namel3ss_celery.compiler import publish
from tests.integration.app import n3

sent_whole = publish.publish_steps


def dies_after_two(app, steps, start=0, progress=None):
    sent_whole(app, steps[:2], start)  # the broker has these two; then the process is gone
    os._exit(9)


publish.publish_steps = dies_after_two
n3.publish(n3.plan({SPEC}), run_id=sys.argv[1])
"""


def dispatch_and_die_while_publishing(env: dict[str, str], spec: dict[str, Any], run_id: str) -> None:
    """Run ``spec`` as run ``run_id`` from a process of the deployment ``env`` names, which publishes two of
    its steps and dies: the run's launch is left to its lease."""
    script = DIES_WHILE_PUBLISHING.replace("{SPEC}", repr(spec))
    environ = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).parents[2])}
    died = subprocess.run(
        [sys.executable, "-c", script, run_id], env=environ, capture_output=True, text=True, timeout=60
    )
    assert died.returncode == 9, died.stderr


def stop_cluster(cluster: Cluster) -> None:
    cluster.worker.stop()
    gc.collect()  # AsyncResults of published steps unsubscribe from the backend as they go
    cluster.n3.close()
    cluster.app.close()  # broker connection pools are kombu's, shared by URL: closed at session end
    cluster.app.backend.client.close()


CLUSTERS = {
    "redis-prefork": ("redis", "prefork"),
    "redis-threads": ("redis", "threads"),
    "rabbitmq-prefork": ("rabbitmq", "prefork"),
    "rabbitmq-threads": ("rabbitmq", "threads"),
}


@pytest.fixture(scope="module", params=list(CLUSTERS))
def cluster(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A worker process on each broker (Redis; RabbitMQ with a Redis backend) and pool (prefork, threads)."""
    broker_kind, pool = CLUSTERS[request.param]
    broker = request.getfixturevalue("amqp_url") if broker_kind == "rabbitmq" else redis_url
    running = start_cluster(broker, redis_url, pool, tmp_path_factory.mktemp("workers"))
    yield running
    stop_cluster(running)


@pytest.fixture(scope="module")
def redis_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One prefork worker on Redis, for tests that need only one broker."""
    running = start_cluster(redis_url, redis_url, "prefork", tmp_path_factory.mktemp("workers"))
    yield running
    stop_cluster(running)


@pytest.fixture
def lone_worker(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """One prefork worker on Redis, for a test that kills it (not shared with other tests)."""
    running = start_cluster(redis_url, redis_url, "prefork", tmp_path)
    yield running
    stop_cluster(running)
