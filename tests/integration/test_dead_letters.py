"""Dead letters: a step that exhausts its retries ends in its queue's dead-letter queue, with its error;
``namel3ss-celery dlq list`` shows it and ``dlq requeue`` runs it again."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_cli import run_cli
from .workers import client, pool_worker

pytestmark = pytest.mark.integration

WAIT = 60


def write_program(tmp_path: Path, reliability: str, max_dead_letter_retries: int = 3) -> tuple[Path, str, str, str]:
    tag, name = uuid.uuid4().hex, f"q{uuid.uuid4().hex[:6]}"
    dlq = f"{name}.dead"
    queue = {
        "name": name,
        "reliability": reliability,
        "max_retries": 1,
        "retry_backoff": "fixed",
        "initial_retry_delay": 0.2,
        "dead_letter_queue": dlq,
        "max_dead_letter_retries": max_dead_letter_retries,
    }
    # flaky fails its first two calls: the first try and its one retry; a third call (requeued) succeeds.
    steps = [{"name": "s", "target": "flaky", "failures": 2, "tag": tag, "worker_pool": "p"}]
    pool = {"name": "p", "queue_name": name, "auto_scaling": False, "max_workers": 1}
    program = {"worker_pools": [pool], "task_queues": [queue], "parallel_blocks": [{"name": "b", "steps": steps}]}
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    return path, name, dlq, tag


def dlq(action: str, path: Path, broker: str, backend: str) -> dict[str, list[dict[str, Any]]]:
    done = run_cli("dlq", action, "--program", str(path), "--broker", broker, "--backend", backend, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return report


def delete_queues(app: Any, *names: str) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            channel.queue_delete(name)


@pytest.mark.parametrize(
    ("broker", "reliability"),
    [("redis", "at_least_once"), ("rabbitmq", "at_least_once"), ("rabbitmq", "at_most_once")],
    ids=["redis-list", "rabbitmq-dead-letter-exchange", "rabbitmq-at-most-once-copy"],
)
def test_a_step_that_exhausts_its_retries_is_dead_lettered_listed_and_requeued(
    broker: str, reliability: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    path, queue, dead, _tag = write_program(tmp_path, reliability)
    n3 = client(broker_url, redis_url)
    worker = pool_worker("p", path, broker_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        run = n3.dispatch(str(path))
        result = run.get(timeout=WAIT)
        assert result.overall_status == "failed"
        assert "flaky call 2" in (result.blocks["b"].results[0].error or "")
        assert result.blocks["b"].results[0].metadata["attempts"] == 2  # its first try and its one retry
        assert result.blocks["b"].results[0].metadata["dead_letter"] == dead

        listed = dlq("list", path, broker_url, redis_url)[dead]
        assert len(listed) == 1, listed
        letter = listed[0]
        assert letter["task"] == "n3.step.flaky" and letter["queue"] == queue
        assert (letter["run"], letter["node"], letter["step"]) == (run.id, "b", "s")
        assert "flaky call 2" in letter["error"] and letter["requeues"] == 0
        assert n3.app.AsyncResult(letter["task_id"]).state == "FAILURE"  # Flower sees a FAILURE too
        assert len(dlq("list", path, broker_url, redis_url)[dead]) == 1  # listing leaves it on the queue

        (requeued,) = dlq("requeue", path, broker_url, redis_url)[dead]
        assert requeued["task_id"] and requeued["kept_because"] is None
        assert n3.app.AsyncResult(requeued["task_id"]).get(timeout=WAIT) == 3  # the third call succeeds
        assert dlq("list", path, broker_url, redis_url)[dead] == []
        assert n3.run(run.id).get(timeout=5).overall_status == "failed"  # the ended run keeps its result
    finally:
        worker.stop()
        delete_queues(n3.app, queue, dead)
        n3.close()
        n3.app.backend.client.close()


def test_requeue_keeps_a_dead_letter_past_max_dead_letter_retries(redis_url: str, tmp_path: Path) -> None:
    path, queue, dead, _tag = write_program(tmp_path, "at_least_once", max_dead_letter_retries=0)
    n3 = client(redis_url, redis_url)
    worker = pool_worker("p", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        assert n3.dispatch(str(path)).get(timeout=WAIT).overall_status == "failed"
        (kept,) = dlq("requeue", path, redis_url, redis_url)[dead]
        assert kept["task_id"] is None and "max_dead_letter_retries 0" in kept["kept_because"]
        assert len(dlq("list", path, redis_url, redis_url)[dead]) == 1
    finally:
        worker.stop()
        delete_queues(n3.app, queue, dead)
        n3.close()
        n3.app.backend.client.close()


def test_dlq_without_a_dead_letter_queue_is_an_error(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump({"parallel_blocks": [{"name": "b", "steps": [{"target": "echo"}]}]}))
    done = run_cli("dlq", "list", "--program", str(path), "--broker", redis_url)
    assert done.returncode == 2 and "no dead-letter queue to read" in done.stderr


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_step_pinned_to_one_worker_is_dead_lettered_and_requeued_to_that_worker(
    broker: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # worker_affinity steps come through the worker's direct queue, which has no dead-letter exchange.
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    path, queue, dead, _tag = write_program(tmp_path, "at_least_once")
    program = yaml.safe_load(path.read_text())
    node = f"p@{os.uname().nodename}"
    program["distributed_configs"] = [{"worker_pool": "p", "worker_affinity": node}]
    path.write_text(yaml.safe_dump(program))
    n3 = client(broker_url, redis_url)
    worker = pool_worker("p", path, broker_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        assert n3.dispatch(str(path)).get(timeout=WAIT).overall_status == "failed"
        (letter,) = dlq("list", path, broker_url, redis_url)[dead]
        assert letter["queue"] == f"{node}.dq2" and "flaky call 2" in letter["error"]
        (requeued,) = dlq("requeue", path, broker_url, redis_url)[dead]
        assert n3.app.AsyncResult(requeued["task_id"]).get(timeout=WAIT) == 3
        assert n3.app.AsyncResult(requeued["task_id"]).state == "SUCCESS"
    finally:
        worker.stop()
        delete_queues(n3.app, queue, dead)
        n3.close()
        n3.app.backend.client.close()
