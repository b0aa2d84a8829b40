"""Run handles, refusals before and on the worker, and living inside the user's own app."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish

from namel3ss_celery import Namel3ssCelery, UnknownRun, UnknownTarget, WaitTimeout

from .conftest import Cluster
from .workers import REPO

pytestmark = pytest.mark.integration

WAIT = 60


def test_a_run_is_read_by_id_from_another_process(redis_cluster: Cluster) -> None:
    handle = redis_cluster.n3.dispatch({"name": "b", "steps": [{"name": "x", "target": "async_double", "value": 4}]})
    script = (
        "import json, sys\n"
        "from tests.integration.app import n3\n"
        "result = n3.run(sys.argv[1]).get(timeout=60)\n"
        "print(json.dumps({'status': str(result.overall_status), 'final': result.final_result}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, handle.id],
        cwd=REPO,
        env={**redis_cluster.env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"status": "completed", "final": {"x": 8}}
    assert redis_cluster.n3.run(handle.id).status() == "completed"


def test_aget_waits_without_blocking_the_event_loop(redis_cluster: Cluster) -> None:
    async def main() -> tuple[object, int]:
        ticks = 0
        handle = redis_cluster.n3.dispatch({"name": "b", "steps": [{"target": "sleep", "seconds": 0.5}]})
        waiting = asyncio.ensure_future(handle.aget(timeout=WAIT))
        while not waiting.done():
            ticks += 1
            await asyncio.sleep(0.05)
        return await waiting, ticks

    result, ticks = asyncio.run(main())
    assert result.overall_status == "completed"  # type: ignore[attr-defined]
    assert ticks >= 5


def test_get_raises_wait_timeout_only_when_the_wait_runs_out(redis_cluster: Cluster) -> None:
    handle = redis_cluster.n3.dispatch({"name": "slow", "steps": [{"target": "sleep", "seconds": 2}]})
    with pytest.raises(WaitTimeout) as info:
        handle.get(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert handle.status() == "running"
    assert handle.get(timeout=WAIT).overall_status == "completed"


def test_an_unknown_run_id_is_refused(redis_cluster: Cluster) -> None:
    with pytest.raises(UnknownRun):
        redis_cluster.n3.run("no-such-run")


def queued(cluster: Cluster) -> int:
    client = redis.Redis.from_url(cluster.env["N3_TEST_BROKER"])
    try:
        return int(client.llen(cluster.queue))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nobody_registered_this", "unknown target 'nobody_registered_this'"),
        ("os:system", "module 'os' is not listed in NAMEL3SS_CELERY_STEP_MODULES"),
        ("tests.integration.steps:no_such_function", "unknown target"),
    ],
)
def test_an_unknown_target_is_refused_before_anything_is_published(
    redis_cluster: Cluster, target: str, message: str
) -> None:
    redis_cluster.worker.process.send_signal(19)  # SIGSTOP: nothing may be consumed while we look
    try:
        before = queued(redis_cluster)
        with pytest.raises(UnknownTarget, match=message) as info:
            redis_cluster.n3.dispatch({"name": "b", "steps": [{"target": "echo"}, {"target": target}]})
        assert info.value.path.endswith("steps[1]")
        assert queued(redis_cluster) == before
    finally:
        redis_cluster.worker.process.send_signal(18)  # SIGCONT


@pytest.mark.parametrize("strategy", ["all", "collect"])
def test_a_worker_refuses_a_target_it_does_not_know_and_the_block_still_ends(
    redis_cluster: Cluster, strategy: str
) -> None:
    # The dispatching process knows a step that the worker processes never registered.
    @redis_cluster.n3.step(f"only_in_the_client_{strategy}")
    def only_here(step: dict[str, object], context: dict[str, object]) -> str:
        return "ran in the client"

    steps = [
        {"name": "ok", "target": "echo", "value": 1},
        {"name": "alien", "target": f"only_in_the_client_{strategy}"},
    ]
    result = redis_cluster.n3.dispatch({"name": "b", "strategy": strategy, "steps": steps}).get(timeout=WAIT)
    entry = next(r for r in result.results if r.task_id == "alien")
    assert entry.status == "failed"
    assert "this worker has no task 'n3.step.only_in_the_client" in (entry.error or "")
    assert result.overall_status == ("failed" if strategy == "all" else "completed")
    meta = redis_cluster.app.backend.get_task_meta(entry.metadata["celery_task_id"])
    assert meta["status"] == "FAILURE"


def test_steps_keep_the_apps_own_task_class_and_queues(redis_cluster: Cluster) -> None:
    result = redis_cluster.n3.dispatch({"name": "b", "steps": [{"name": "me", "target": "whoami"}]}).get(timeout=WAIT)
    me = result.final_result["me"]
    assert "AuditedTask" in me["task_classes"]
    assert me["task_name"] == "n3.step.whoami"
    assert me["queue"] == redis_cluster.queue  # the app's own default queue
    report = redis_cluster.app.send_task("their_project.report", args=("q3",))
    assert report.get(timeout=WAIT) == "report: q3"  # the app's own routes still work
    report.forget()


def test_the_default_app_runs_with_celery_dash_a(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from namel3ss_celery import Settings

    from .workers import WorkerProcess

    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path_factory.mktemp("default-app"), pool="threads")
    try:
        worker.wait_ready(n3.app)
        steps = [{"name": "one", "target": "tests.integration.steps:add_one", "value": 41}]
        result = n3.dispatch({"name": "b", "steps": steps}).get(timeout=WAIT)
        assert result.final_result == {"one": 42}
        assert result.results[0].metadata["worker"] == worker.hostname
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


def test_workers_do_not_stay_subscribed_to_step_results(redis_cluster: Cluster) -> None:
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    try:
        before = len(client.pubsub_channels("celery-task-meta-*"))
        for _ in range(2):  # published by a worker (the launch task), as a chord
            redis_cluster.n3.dispatch({"name": "b", "steps": [{"target": "echo", "value": 1}] * 50}).get(timeout=WAIT)
        for _ in range(20):  # small runs: published by this process, as a group
            small = {"name": "s", "strategy": "collect", "steps": [{"target": "echo", "value": 1}] * 5}
            redis_cluster.n3.dispatch(small).get(timeout=WAIT)
        assert len(client.pubsub_channels("celery-task-meta-*")) - before < 10
    finally:
        client.close()


def test_an_app_that_ignores_results_still_runs_every_strategy(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from .conftest import start_cluster, stop_cluster

    cluster = start_cluster(redis_url, redis_url, "prefork", tmp_path_factory.mktemp("ignore"), ignore_result=True)
    try:
        assert cluster.app.conf.task_ignore_result is True
        big = [{"target": "echo", "value": i} for i in range(20)]  # a chord: its join needs results
        result = cluster.n3.dispatch({"name": "b", "strategy": "map_reduce", "reduce_function": "sum", "steps": big})
        assert result.get(timeout=WAIT).final_result == sum(range(20))
        small = [{"name": "x", "target": "echo", "value": 1}, {"name": "bad", "target": "fail"}]
        collected = cluster.n3.dispatch({"name": "c", "strategy": "collect", "steps": small}).get(timeout=WAIT)
        assert collected.final_result["bad"]["status"] == "failed"
    finally:
        stop_cluster(cluster)


def test_log_records_carry_the_run_block_and_step_ids(redis_cluster: Cluster) -> None:
    handle = redis_cluster.n3.dispatch({"name": "logged", "steps": [{"name": "speaker", "target": "log_ids"}]})
    result = handle.get(timeout=WAIT)
    assert result.final_result == {"speaker": {"run": handle.id, "block": "logged", "step": "speaker"}}


def test_run_records_and_coordination_keys_expire(redis_cluster: Cluster) -> None:
    handle = redis_cluster.n3.dispatch({"name": "ttl", "strategy": "collect", "steps": [{"target": "echo"}]})
    handle.get(timeout=WAIT)
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    try:
        keys = [k.decode() for k in client.scan_iter(f"n3:run:{handle.id}*")]
        assert f"n3:run:{handle.id}" in keys and len(keys) >= 2
        expires = int(redis_cluster.app.conf.result_expires.total_seconds())
        assert all(0 < client.ttl(k) <= expires for k in keys)
    finally:
        client.close()


def test_a_large_context_is_stored_once_and_every_step_reads_it(redis_cluster: Cluster) -> None:
    """A 1 MB context on 8 steps (a run small enough for dispatch to publish its steps itself, here): the
    messages carry its reference, not 8 copies of it."""
    from namel3ss_celery.plan import fields

    big = "x" * 1_000_000
    steps = [{"name": f"s{i}", "target": "context_value", "key": "big"} for i in range(8)]
    published: list[int] = []

    def measure(sender: Any = None, body: Any = None, **_: Any) -> None:
        published.append(len(json.dumps(body)))

    before_task_publish.connect(measure)
    try:
        handle = redis_cluster.n3.dispatch({"name": "ctx", "strategy": "collect", "steps": steps}, context={"big": big})
        result = handle.get(timeout=60)
    finally:
        before_task_publish.disconnect(measure)
    assert result.overall_status == "completed", result.error_message
    assert all(entry["result"] == big for entry in result.final_result.values())
    (stored,) = redis_cluster.n3.store.get_fields(handle.id, [fields.node_context("ctx")])
    assert stored is not None and json.loads(stored)["big"] == big
    assert len(published) == 8 and max(published) < 10_000  # each step message carries the reference only
