"""Worker pools as Celery queues: steps routed to their pool's workers, allowed_tools enforced there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from namel3ss_celery import CompileError, Namel3ssCelery, Settings
from namel3ss_celery.plan import fields

from .workers import CLI, WorkerProcess, client, pool_worker

pytestmark = pytest.mark.integration

WAIT = 60


@pytest.fixture(scope="module")
def pools(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two pools (alpha: prefork, beta: threads), each served by `namel3ss-celery worker --pool`."""
    import tests.integration.steps  # noqa: F401 - the same steps the workers load

    tag = uuid.uuid4().hex[:6]
    folder = tmp_path_factory.mktemp("pools")
    program = {
        "worker_pools": [
            {
                "name": "alpha",
                "queue_name": f"{tag}-alpha",
                "auto_scaling": False,
                "max_workers": 1,
                "allowed_tools": ["whoami"],
                "allowed_agents": ["whoami"],
                "environment_variables": {"N3_POOL_MARK": "alpha"},
            },
            {
                "name": "beta",
                "queue_name": f"{tag}-beta",
                "auto_scaling": False,
                "max_workers": 2,
                "worker_config": {"pool": "threads"},
                "allowed_tools": ["whoami", "echo", "sleep", "fail"],
            },
        ],
        "parallel_blocks": [
            {
                "name": "spread",
                "steps": [
                    {"name": "a", "target": "whoami", "worker_pool": "alpha"},
                    {"name": "b", "target": "whoami", "worker_pool": "beta"},
                    {"name": "c", "target": "echo", "value": 3, "worker_pool": "beta"},
                ],
            },
        ],
    }
    path = folder / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    n3 = client(redis_url, redis_url)
    workers = []
    try:
        for pool in ("alpha", "beta"):
            worker = pool_worker(pool, path, redis_url, redis_url, folder)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready(n3.app)
        yield {"n3": n3, "program": str(path), "tag": tag, "workers": workers, "raw": program}
    finally:
        for worker in workers:
            worker.stop()
        n3.close()


def test_each_step_runs_on_its_pools_queue_and_workers(pools: dict[str, Any]) -> None:
    n3, tag = pools["n3"], pools["tag"]
    result = n3.dispatch(pools["program"]).get(timeout=WAIT)
    assert result.overall_status == "completed"
    spread = result.blocks["spread"]
    a, b = spread.final_result["a"], spread.final_result["b"]
    assert a["queue"] == f"{tag}-alpha" and a["hostname"].startswith("alpha@")
    assert b["queue"] == f"{tag}-beta" and b["hostname"].startswith("beta@")
    assert spread.final_result["c"] == 3


def on_beta(pools: dict[str, Any], block: dict[str, Any]) -> Any:
    """``block`` run as the program's only block, every step on pool beta; its result."""
    program = dict(pools["raw"])
    steps = [{**step, "worker_pool": "beta"} for step in block["steps"]]
    program["parallel_blocks"] = [{**block, "steps": steps}]
    return pools["n3"].dispatch(program).get(timeout=WAIT).blocks[block["name"]]


# Only pool workers run here: nobody consumes the app's default queue. The adapter's own tasks of a block
# whose every step names a pool go to that pool's queue: the launch of a run too large for dispatch to
# publish itself, the chord body (and its errback), the deadline.


def test_pool_workers_alone_launch_a_large_run_and_join_its_chord(pools: dict[str, Any]) -> None:
    steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(12)]  # over 8: launched by a worker
    result = on_beta(pools, {"name": "big", "strategy": "all", "steps": steps})
    assert result.overall_status == "completed"
    assert result.final_result == {f"s{i}": i for i in range(12)}


def test_pool_workers_alone_settle_a_failed_chord(pools: dict[str, Any]) -> None:
    steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(11)] + [{"name": "bad", "target": "fail"}]
    result = on_beta(pools, {"name": "broken", "strategy": "all", "fail_fast": False, "steps": steps})
    assert result.overall_status == "failed"
    assert "bad" in (result.error_message or "")


def test_pool_workers_alone_end_a_block_at_its_deadline(pools: dict[str, Any]) -> None:
    steps = [{"name": "slow", "target": "sleep", "seconds": 10}]  # never looks at its deadline
    started = time.monotonic()
    result = on_beta(pools, {"name": "late", "strategy": "collect", "timeout_seconds": 1.5, "steps": steps})
    assert result.overall_status == "timeout"
    assert time.monotonic() - started < 8  # the deadline task ended it, not the step's end


@pytest.mark.parametrize(("kind", "field"), [("tool", "allowed_tools"), ("agent", "allowed_agents")])
def test_a_target_the_pool_does_not_allow_is_refused_before_publishing(
    pools: dict[str, Any], kind: str, field: str
) -> None:
    program = dict(pools["raw"])
    step = {"target": "echo", "kind": kind, "value": 1, "worker_pool": "alpha"}
    program["parallel_blocks"] = [{"name": "x", "steps": [step]}]
    with pytest.raises(CompileError, match=rf"pool 'alpha' does not allow {kind} target 'echo' \({field}: whoami\)"):
        pools["n3"].dispatch(program)


def test_an_agent_step_the_pool_allows_runs_there(pools: dict[str, Any]) -> None:
    program = dict(pools["raw"])
    program["parallel_blocks"] = [
        {"name": "x", "steps": [{"target": "whoami", "kind": "agent", "worker_pool": "alpha"}]}
    ]
    result = pools["n3"].dispatch(program).get(timeout=WAIT).blocks["x"]
    assert result.overall_status == "completed" and result.results[0].result["hostname"].startswith("alpha@")


@pytest.mark.parametrize("kind", ["tool", "agent"])
def test_a_message_for_a_refused_target_is_refused_on_the_worker(pools: dict[str, Any], kind: str) -> None:
    n3, tag = pools["n3"], pools["tag"]
    # A message sent by hand for a run that exists (a step of an unknown run is dropped, never filed).
    run_id = f"by-hand-{uuid.uuid4().hex[:8]}"
    plan = n3.plan({"name": "x", "steps": [{"name": "s", "target": "echo", "kind": kind, "value": 1}]})
    record = {
        fields.KIND: "block",
        fields.NAME: "x",
        fields.PLAN: plan.to_json(),
        fields.STATUS: "running",
        fields.launched("x"): "1",
    }
    n3.store.create_run(run_id, record, 3600)
    payload = {
        "v": 1,
        "run": run_id,
        "node": "x",
        "i": 0,
        "n": 1,
        "key": "s",
        "join": "count",
        "strategy": "all",
        "fail_fast": True,
        "retries": 0,
        "feed": False,
        "deadline": None,
        "step": {"target": "echo", "kind": kind, "value": 1},
        "context": {},
    }
    sent = n3.app.send_task("n3.step.echo", args=(payload,), queue=f"{tag}-alpha")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        meta = n3.app.backend.get_task_meta(sent.id, cache=False)
        if meta["status"] != "PENDING":
            break
        time.sleep(0.1)
    assert meta["status"] == "FAILURE"
    assert f"worker pool 'alpha' does not allow {kind} target 'echo'" in str(meta["result"])
    result = n3.run(run_id).get(timeout=WAIT)  # filed as the step's failure: its block ends
    assert result.overall_status == "failed" and "does not allow" in str(result.results[0].error)


def test_the_pool_worker_runs_with_the_pools_command_line(pools: dict[str, Any]) -> None:
    alpha = pools["workers"][0]
    log = alpha.log()
    assert f"-Q {pools['tag']}-alpha" in log and "-n alpha@%h" in log
    assert "--prefetch-multiplier=1" in log


def test_deploy_writes_the_files(pools: dict[str, Any], tmp_path: Path) -> None:
    import subprocess

    command = [CLI, "deploy", "--target", "systemd", pools["program"], "--out", str(tmp_path)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "give --steps MODULE" in refused.stderr  # the default app finds no steps
    out = subprocess.run(
        [*command, "--steps", "tests.integration.steps", "--workdir", "/srv/proj"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    units = sorted(p.name for p in tmp_path.iterdir())
    assert "namel3ss-celery-worker-alpha.service" in units and "namel3ss-celery-worker-beta.service" in units
    alpha = (tmp_path / "namel3ss-celery-worker-alpha.service").read_text()
    assert '"NAMEL3SS_CELERY_STEP_MODULES=tests.integration.steps"' in alpha
    assert f'"NAMEL3SS_CELERY_PROGRAM={pools["program"]}"' in alpha  # a file outside the project: as given
    assert "ExecStart=/srv/proj/.venv/bin/celery -A namel3ss_celery worker" in alpha


def test_a_users_own_app_serves_a_pool_with_n3_pool(redis_url: str, tmp_path: Path) -> None:
    """`celery -A their_project worker --n3-pool NAME`: the pool's queue, its allowed_tools, the app's task class."""
    from .app import make_app

    tag = uuid.uuid4().hex[:6]
    program = {
        "worker_pools": [{"name": "gamma", "queue_name": f"{tag}-gamma", "allowed_tools": ["whoami"]}],
        "parallel_blocks": [{"name": "b", "steps": [{"name": "me", "target": "whoami", "worker_pool": "gamma"}]}],
    }
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    queue = f"{tag}-default"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
        "NAMEL3SS_CELERY_PROGRAM": str(path),
    }
    app = make_app(redis_url, redis_url, queue)
    n3 = Namel3ssCelery(
        app, settings=Settings.from_mapping({**env, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url})
    )
    worker = WorkerProcess("tests.integration.app", env, tmp_path, extra_args=["--n3-pool", "gamma"])
    try:
        worker.wait_ready(app)
        result = n3.dispatch(str(path)).get(timeout=WAIT)
        me = result.blocks["b"].final_result["me"]
        assert me["queue"] == f"{tag}-gamma" and me["hostname"] == worker.hostname
        assert "AuditedTask" in me["task_classes"]
    finally:
        worker.stop()
        n3.close()
        app.close()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_priorities_run_highest_first_on_both_brokers(
    broker: str, redis_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One spec priority (0 lowest .. 9 highest), the same order of execution on Redis and on RabbitMQ."""
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_url
    tag = uuid.uuid4().hex[:6]
    priorities = [1, 9, 4, 0, 7, 5]
    program = {
        "worker_pools": [{"name": "solo", "queue_name": f"{tag}-prio", "auto_scaling": False, "max_workers": 1}],
        "parallel_blocks": [
            {
                "name": "p",
                "strategy": "collect",
                "steps": [
                    {"name": f"p{p}", "target": "echo", "value": p, "priority": p, "worker_pool": "solo"}
                    for p in priorities
                ],
            }
        ],
    }
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    n3 = client(broker_url, redis_url)
    handle = n3.dispatch(str(path))  # every step is queued before any worker runs
    worker = pool_worker("solo", path, broker_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        result = handle.get(timeout=WAIT)
        ran = sorted(result.blocks["p"].results, key=lambda r: r.start_time or 0)
        assert [r.result for r in ran] == sorted(priorities, reverse=True)
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()


def test_an_autoscaled_pool_scales_on_its_queue_depth(redis_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    program = {
        "worker_pools": [
            {
                "name": "elastic",
                "queue_name": f"{tag}-elastic",
                "min_workers": 1,
                "max_workers": 3,
                "auto_scaling": True,
                "target_value": 2,
            }
        ],
        "parallel_blocks": [{"name": "b", "steps": [{"target": "echo", "value": 1, "worker_pool": "elastic"}]}],
    }
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))
    n3 = client(redis_url, redis_url)
    worker = pool_worker("elastic", path, redis_url, redis_url, tmp_path)
    try:
        worker.wait_ready(n3.app)
        assert "--autoscale=3,1" in worker.log()
        stats = n3.app.control.inspect([worker.hostname], timeout=5).stats() or {}
        assert stats[worker.hostname]["autoscaler"]["metric"] == "queue_depth"
        assert n3.dispatch(str(path)).get(timeout=WAIT).overall_status == "completed"
    finally:
        worker.stop()
        n3.close()
        n3.app.backend.client.close()
