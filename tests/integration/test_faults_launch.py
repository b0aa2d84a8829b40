"""Ordinary production faults around publishing, with real workers: a launch, a small run's dispatch and a
settle whose process dies half way are finished by another (see test_faults.py for the others).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from namel3ss_celery import ParallelExecutionResult, WaitTimeout, WorkflowResult
from namel3ss_celery.engine.leases import LAUNCH_LEASE
from tests.waiting import wait_until

from .conftest import Cluster, dispatch_and_die_while_publishing, start_cluster, stop_cluster
from .workers import WorkerProcess, kill_with_children

pytestmark = pytest.mark.integration


def test_a_launch_whose_worker_died_while_publishing_is_finished_by_another_worker(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    """On RabbitMQ the launch, acknowledged late, comes back at once to the next worker, which sends the steps
    its first worker had not sent (after that worker's lease ran out). Every step counts once."""

    (tmp_path / "first").mkdir()
    # Steps acknowledged late: one the killed worker had taken comes back too (with the default, a step it
    # had taken and not yet started is lost, and its block would wait for its deadline).
    cluster = start_cluster(amqp_url, redis_url, "prefork", tmp_path / "first", acks_late=True)
    other: WorkerProcess | None = None
    try:
        total = 5000
        steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(total)]
        handle = cluster.n3.dispatch({"name": "b", "strategy": "collect", "steps": steps})
        sent, other = kill_half_way_through_publishing(cluster, handle.id, "b", total, tmp_path / "second")
        try:
            result = handle.get(timeout=90)
        except WaitTimeout as exc:
            record = cluster.n3.store.run_record(handle.id) or {}
            state = {k: v for k, v in record.items() if k.startswith("node:b:") and "started" not in k}
            counts = cluster.n3.store.step_counts(handle.id, ["b"])
            raise AssertionError(f"{exc}; record {state}; filed {counts}; second worker:\n{other.log()}") from exc
    finally:
        if other is not None:
            other.stop()
        stop_cluster(cluster)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message
    assert int(sent or 0) < total  # it was killed half way through publishing
    assert result.completed_tasks == total
    assert result.final_result == {
        f"s{i}": {"status": "completed", "result": i, "duration_ms": result.final_result[f"s{i}"]["duration_ms"]}
        for i in range(total)
    }


def test_a_small_run_whose_dispatching_process_died_while_publishing_is_finished_by_a_worker(
    lone_worker: Cluster,
) -> None:
    """``dispatch`` publishes a small run itself; killed after sending two of its six steps, it leaves the run
    to the lease it took when it recorded the run: a worker's watchdog finishes the launch once it runs out."""
    steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(6)]
    spec = {"name": "b", "strategy": "collect", "steps": steps}
    run_id = uuid.uuid4().hex
    dispatch_and_die_while_publishing(lone_worker.env, spec, run_id)
    started = time.monotonic()
    result = lone_worker.n3.run(run_id).get(timeout=60)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == "completed", result.error_message
    assert result.completed_tasks == 6
    assert {k: v["result"] for k, v in result.final_result.items()} == {f"s{i}": i for i in range(6)}
    assert time.monotonic() - started < LAUNCH_LEASE + 15


def test_a_settle_whose_worker_died_while_publishing_the_next_block_is_finished_by_another_worker(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The last step of block ``a`` settles it on its worker and publishes block ``b`` (5000 steps) from there;
    that worker is killed half way. Another worker's watchdog takes over the launch's lease and sends what the
    broker did not have, in the same run. Every step of ``b`` counts once."""

    (tmp_path / "first").mkdir()
    cluster = start_cluster(amqp_url, redis_url, "prefork", tmp_path / "first", acks_late=True)
    other: WorkerProcess | None = None
    total = 5000
    try:
        first = {"name": "a", "strategy": "all", "steps": [{"name": "a0", "target": "echo", "value": "go"}]}
        steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(total)]
        second = {"name": "b", "strategy": "collect", "steps": steps, "depends_on": ["a"]}
        handle = cluster.n3.dispatch({"parallel_blocks": [first, second]})
        sent, other = kill_half_way_through_publishing(cluster, handle.id, "b", total, tmp_path / "second")
        try:
            result = handle.get(timeout=90)
            resumed_by = other.log()
        except WaitTimeout as exc:
            counts = cluster.n3.store.step_counts(handle.id, ["b"])
            raise AssertionError(f"{exc}; filed {counts}; second worker:\n{other.log()}") from exc
    finally:
        if other is not None:
            other.stop()
        stop_cluster(cluster)
    assert isinstance(result, WorkflowResult)
    assert result.overall_status == "completed", result.error_message
    assert int(sent or 0) < total  # it was killed half way through publishing b
    assert result.blocks["b"].completed_tasks == total
    assert "the launch of block b of run" in resumed_by


def kill_half_way_through_publishing(
    cluster: Cluster, run_id: str, node: str, total: int, log_dir: Path
) -> tuple[str | None, WorkerProcess]:
    """Once the cluster's worker has published some but not all ``total`` steps of ``node``, kill it whole and
    start another worker on its queue: how many steps the first had published, and the second worker (ready)."""
    from namel3ss_celery.plan import fields

    published = fields.published(node)

    def halfway() -> bool:
        (sent,) = cluster.n3.store.get_fields(run_id, [published])
        return sent is not None and 0 < int(sent) < total

    what = f"the launch of {node} never got half way: "
    wait_until(halfway, 30, lambda: what + cluster.worker.log(), every=0.002)
    kill_with_children(cluster.worker)
    (sent,) = cluster.n3.store.get_fields(run_id, [published])
    log_dir.mkdir()
    other = WorkerProcess("tests.integration.app", cluster.env, log_dir, queues=[cluster.queue])
    try:
        other.wait_ready(cluster.app)
    except BaseException:
        other.stop()
        raise
    return sent, other
