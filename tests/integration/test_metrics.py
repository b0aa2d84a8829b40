"""Prometheus metrics at /metrics of ``namel3ss-celery events --serve``, scraped after real runs."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_until

from .conftest import Cluster
from .steps import MARKER_TTL, gate_key, started_key
from .workers import EventsServer

pytestmark = pytest.mark.integration


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    tag = uuid.uuid4().hex[:8]
    program = tmp_path / "pools.yaml"
    program.write_text(
        f"worker_pools:\n  - {{name: crawl, queue_name: crawl-{tag}}}\n"
        f"task_queues:\n  - {{name: crawl-{tag}, dead_letter_queue: crawl-{tag}.dead}}\n"
        "parallel_blocks:\n  - {name: b, steps: [{target: echo, worker_pool: crawl}]}\n"
    )
    running = EventsServer("--broker", redis_url, "--program", str(program))
    try:
        yield f"{running.url}/metrics", f"crawl-{tag}", tag
    finally:
        running.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_runs_steps_blocks_losers_and_queues(
    redis_cluster: Cluster, served: tuple[str, str, str]
) -> None:
    url, queue, tag = served
    n3 = redis_cluster.n3
    gate = uuid.uuid4().hex
    race = {  # the winner waits for its gate, opened once the loser runs: the loser has worker-seconds to count
        "name": f"race-{tag}",
        "strategy": "race",
        "steps": [
            {"name": "slow", "target": "patient", "seconds": 20, "tag": tag},
            {"name": "fast", "target": "gated", "gate": gate, "seconds": 30, "value": 1},
        ],
    }
    broken = {"name": f"broken-{tag}", "steps": [{"target": "fail"}, {"target": "echo", "value": 2}]}
    flaky = {
        "name": f"flaky-{tag}",
        "retry_failed": True,
        "max_retries": 3,
        "steps": [{"target": "flaky", "failures": 2, "tag": tag}, {"target": "echo", "value": 3}],
    }
    wait_until(
        lambda: ("namel3ss_queue_messages", (("kind", "pool"), ("queue", queue))) in scrape(url),
        30,
        "the server to serve its metrics",
    )  # it follows the stream from its start: runs come after
    raced = n3.dispatch(race)
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    try:
        wait_until(lambda: client.llen(started_key(tag)) > 0, 30, "the race's loser to start")
        client.set(gate_key(gate), 1, ex=MARKER_TTL)
    finally:
        client.close()
    assert raced.get(timeout=30).overall_status == "completed"
    assert n3.dispatch(broken).get(timeout=30).overall_status == "failed"
    assert n3.dispatch(flaky).get(timeout=30).overall_status == "completed"  # its flaky step failed twice
    for _ in range(3):
        n3.app.send_task("n3.step.echo", args=({},), queue=queue)  # nobody consumes the pool's queue here
    try:
        check(url, queue, tag)
    finally:
        with n3.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)


def check(url: str, queue: str, tag: str) -> None:

    def counted() -> bool:
        found = scrape(url)
        last = ("namel3ss_runs_finished_total", (("status", "completed"), ("workflow", f"flaky-{tag}")))
        return found.get(last) == 1  # the last run: those before it are counted too

    wait_until(counted, 30, lambda: str({k: v for k, v in scrape(url).items() if tag in str(k)}))
    found = scrape(url)
    assert found[("namel3ss_runs_started_total", (("workflow", f"race-{tag}"),))] == 1
    assert found[("namel3ss_runs_finished_total", (("status", "completed"), ("workflow", f"race-{tag}")))] == 1
    assert found[("namel3ss_runs_finished_total", (("status", "failed"), ("workflow", f"broken-{tag}")))] == 1
    assert found[("namel3ss_steps_total", (("status", "failed"), ("target", "fail")))] >= 1
    assert found[("namel3ss_block_duration_seconds_count", (("strategy", "race"),))] >= 1
    # the loser ran until it was told to stop, after the run ended: its seconds count once it reported
    loser = ("namel3ss_loser_worker_seconds_total", (("strategy", "race"),))
    wait_until(lambda: scrape(url).get(loser, 0) > 0, 30, lambda: f"loser seconds: {scrape(url).get(loser)}")
    retried = (("block", f"flaky-{tag}"), ("target", "flaky"), ("workflow", f"flaky-{tag}"))
    assert found[("namel3ss_step_retries_total", retried)] == 2
    not_retried = (("block", f"flaky-{tag}"), ("target", "echo"), ("workflow", f"flaky-{tag}"))
    assert ("namel3ss_step_retries_total", not_retried) not in found
    assert found[("namel3ss_queue_messages", (("kind", "pool"), ("queue", queue)))] == 3
    assert found[("namel3ss_queue_messages", (("kind", "dead_letters"), ("queue", f"{queue}.dead")))] == 0
