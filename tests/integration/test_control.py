"""Race, any_success, fail_fast, deadlines, max_concurrency, retries and cancel on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import states

from namel3ss_celery import ParallelExecutionResult
from tests.waiting import wait_until

from .conftest import Cluster, start_cluster, stop_cluster
from .steps import MARKER_TTL, gate_key, started_key
from .workers import REPO

pytestmark = pytest.mark.integration

WAIT = 60


def outcomes(result: ParallelExecutionResult) -> dict[str, str]:
    return {r.task_id: r.metadata.get("outcome", "") for r in result.results}


def started_steps(cluster: Cluster, tag: str) -> int:
    """How many steps with ``tag`` have started (each marks its start in Redis)."""
    client = redis.Redis.from_url(cluster.env["N3_TEST_BACKEND"])
    try:
        return int(client.llen(started_key(tag)))
    finally:
        client.close()


def alive(pid: int) -> bool:
    """``pid`` runs; a zombie (dead, not yet reaped by its pool) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # reaped just now; or no /proc (not Linux), where os.kill has said it all
        return not Path("/proc/self").exists()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def settled_losers(cluster: Cluster, run_id: str, timeout: float = 20.0) -> ParallelExecutionResult:
    """The block's result once every loser has reported (the result is refreshed as they do)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.n3.run(run_id).get(timeout=WAIT)
        assert isinstance(result, ParallelExecutionResult)
        if result.metadata.get("losers_pending", 0) == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_race_is_won_by_the_first_to_finish_not_the_first_dispatched(cluster: Cluster) -> None:
    tag = f"race-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "slow", "target": "patient", "seconds": 5, "value": "slow", "tag": tag},
        {"name": "fast", "target": "patient", "seconds": 0.2, "value": "fast", "after": tag},  # slow runs
        {"name": "queued", "target": "patient", "seconds": 5, "value": "queued"},
    ]
    started = time.monotonic()
    handle = cluster.n3.dispatch({"name": "race", "strategy": "race", "steps": steps})
    result = handle.get(timeout=WAIT)
    assert time.monotonic() - started < 4.5  # before slow's 5 s: the winner decided it
    assert result.overall_status == "completed"
    assert result.final_result == "fast"
    assert result.metadata["winner"] == "fast"
    final = settled_losers(cluster, handle.id)
    assert outcomes(final) == {"slow": "stopped", "fast": "won", "queued": "not_started"}
    slow = next(r for r in final.results if r.task_id == "slow")
    assert slow.duration_ms is not None and slow.duration_ms < 1500  # stopped soon after the winner
    assert final.overall_status == "completed" and final.final_result == "fast"


def test_a_race_whose_first_finisher_fails_fails(cluster: Cluster) -> None:
    tag = f"race-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "slow", "target": "async_patient", "seconds": 5, "value": 1, "tag": tag},
        {"name": "broken", "target": "patient", "seconds": 0.1, "fail": True, "after": tag},  # once slow runs
    ]
    handle = cluster.n3.dispatch({"name": "race", "strategy": "race", "steps": steps})
    result = handle.get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert "broken: RuntimeError" in (result.error_message or "")
    final = settled_losers(cluster, handle.id)
    assert outcomes(final)["slow"] == "stopped"  # the async step was cancelled by the runner


def test_any_success_takes_the_first_success_after_failures(cluster: Cluster) -> None:
    steps = [
        {"name": "a", "target": "fail"},
        {"name": "b", "target": "async_fail"},
        {"name": "c", "target": "patient", "seconds": 0.3, "value": "c wins"},
    ]
    result = cluster.n3.dispatch({"name": "any", "strategy": "any_success", "steps": steps}).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result == "c wins"
    assert outcomes(result) == {"a": "ran_to_end", "b": "ran_to_end", "c": "won"}
    assert result.failed_tasks == 2


def test_any_success_fails_with_every_error_when_all_fail(cluster: Cluster) -> None:
    steps = [{"name": "a", "target": "fail", "message": "first"}, {"name": "b", "target": "fail", "message": "second"}]
    result = cluster.n3.dispatch({"name": "any", "strategy": "any_success", "steps": steps}).get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert "a: ValueError: first" in (result.error_message or "")
    assert "b: ValueError: second" in (result.error_message or "")


def test_exactly_one_winner_when_steps_finish_together(redis_cluster: Cluster) -> None:
    for _ in range(5):
        steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(4)]
        handle = redis_cluster.n3.dispatch({"name": "tie", "strategy": "race", "steps": steps})
        final = settled_losers(redis_cluster, handle.id)
        assert list(outcomes(final).values()).count("won") == 1
        assert final.final_result == int(final.metadata["winner"][1:])


def test_a_duplicate_delivery_of_the_winner_changes_nothing(redis_cluster: Cluster) -> None:
    steps = [{"name": "win", "target": "echo", "value": "w"}, {"name": "late", "target": "patient", "seconds": 0.5}]
    handle = redis_cluster.n3.dispatch({"name": "dup", "strategy": "race", "steps": steps})
    first = settled_losers(redis_cluster, handle.id)
    winner = next(r for r in first.results if r.metadata.get("outcome") == "won")
    # Deliver the winner's message again, as a broker would after a lost ack.
    meta = redis_cluster.app.backend.get_task_meta(winner.metadata["celery_task_id"], cache=False)
    assert meta["status"] == "SUCCESS"
    record = redis_cluster.n3.store.run_record(handle.id) or {}
    payload = {
        "v": 1,
        "run": handle.id,
        "node": "dup",
        "i": [r.task_id for r in first.results].index(winner.task_id),
        "n": 2,
        "key": winner.task_id,
        "join": "count",
        "strategy": "race",
        "fail_fast": True,
        "retries": 0,
        "feed": False,
        "step": {"name": winner.task_id, "target": "echo", "kind": "tool", "value": "w"},
        "context": {"outputs": {}},
    }
    assert record
    duplicate = redis_cluster.app.send_task("n3.step.echo", args=(payload,), ignore_result=True)
    # Handled once its state is stored: a step of a decided block is marked REVOKED and never starts.
    backend = redis_cluster.app.backend
    wait_until(
        lambda: backend.get_task_meta(duplicate.id, cache=False)["status"] in states.READY_STATES,
        30,
        lambda: f"the duplicate {duplicate.id} has no final state\n{redis_cluster.worker.log()}",
    )
    assert backend.get_task_meta(duplicate.id, cache=False)["status"] == states.REVOKED
    again = redis_cluster.n3.run(handle.id).get(timeout=WAIT)
    assert again.final_result == first.final_result
    assert again.metadata["winner"] == first.metadata["winner"]
    assert list(outcomes(again).values()).count("won") == 1


def test_fail_fast_ends_all_at_the_first_failure(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    steps = [
        {"name": "long", "target": "patient", "seconds": 8, "tag": tag},
        {"name": "bad", "target": "fail", "message": "early", "after": tag},  # fails once "long" runs
    ]
    started = time.monotonic()
    handle = cluster.n3.dispatch({"name": "ff", "strategy": "all", "steps": steps})
    result = handle.get(timeout=WAIT)
    assert time.monotonic() - started < 4
    assert result.overall_status == "failed"
    assert "fail_fast" in (result.error_message or "")
    final = settled_losers(cluster, handle.id)
    assert outcomes(final)["long"] == "stopped"


def test_a_deadline_keeps_partial_results(redis_cluster: Cluster) -> None:
    steps = [
        {"name": "quick", "target": "echo", "value": "kept"},
        {"name": "long1", "target": "patient", "seconds": 10},
        {"name": "long2", "target": "async_patient", "seconds": 10},
        {"name": "queued", "target": "patient", "seconds": 10},
    ]
    started = time.monotonic()
    handle = redis_cluster.n3.dispatch({"name": "dl", "strategy": "collect", "timeout_seconds": 1.5, "steps": steps})
    result = handle.get(timeout=WAIT)
    assert 1.4 < time.monotonic() - started < 5
    assert result.overall_status == "timeout"
    assert result.final_result["quick"]["result"] == "kept"
    final = settled_losers(redis_cluster, handle.id)
    assert outcomes(final)["queued"] == "not_started"
    assert {outcomes(final)["long1"], outcomes(final)["long2"]} == {"stopped"}


def test_retries_count_a_step_once(redis_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    steps = [{"name": "flaky", "target": "flaky", "failures": 2, "tag": tag}]
    block = {"name": "r", "retry_failed": True, "max_retries": 3, "steps": steps}
    result = redis_cluster.n3.dispatch(block).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result == {"flaky": 3}
    assert result.total_tasks == 1 and result.completed_tasks == 1 and result.failed_tasks == 0
    assert result.results[0].metadata["attempts"] == 3  # Celery's retries of its message, counted by the worker


def test_retries_give_up_after_max_retries(redis_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    steps = [{"name": "flaky", "target": "flaky", "failures": 5, "tag": tag}]
    block = {"name": "r", "retry_failed": True, "max_retries": 1, "steps": steps}
    result = redis_cluster.n3.dispatch(block).get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert "ConnectionError: flaky call 2" in (result.error_message or "")


def test_cancel_stops_a_running_workflow(redis_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    program = {
        "parallel_blocks": [
            {"name": "work", "strategy": "all", "steps": [{"target": "patient", "seconds": 10, "tag": tag}] * 3},
            {"name": "after", "depends_on": ["work"], "steps": [{"target": "echo", "value": 1}]},
        ]
    }
    handle = redis_cluster.n3.dispatch(program)
    # Cancel once the worker's two processes both run a step; the third waits in the queue.
    wait_until(
        lambda: started_steps(redis_cluster, tag) == 2,
        30,
        lambda: f"{started_steps(redis_cluster, tag)} of 2 steps started\n{redis_cluster.worker.log()}",
    )
    started = time.monotonic()
    handle.cancel()
    result = handle.get(timeout=WAIT)
    assert time.monotonic() - started < 2
    assert result.overall_status == "cancelled"
    assert "after" not in result.blocks
    block = result.blocks["work"]
    assert block.overall_status == "cancelled"
    final = None
    for _ in range(100):
        final = redis_cluster.n3.run(handle.id).get(timeout=WAIT)
        if final.blocks["work"].metadata.get("losers_pending", 0) == 0 and all(  # type: ignore[union-attr]
            r.metadata.get("outcome") in ("stopped", "not_started")
            for r in final.blocks["work"].results  # type: ignore[union-attr]
        ):
            break
        time.sleep(0.1)
    assert final is not None
    work = final.blocks["work"]
    assert sorted(r.metadata.get("outcome", "") for r in work.results) == ["not_started", "stopped", "stopped"]  # type: ignore[union-attr]


def test_the_run_goes_on_when_the_dispatching_process_dies(redis_cluster: Cluster) -> None:
    script = (
        "import os\n"
        "from tests.integration.app import n3\n"
        "program = {'workflows': [{'name': 'w', 'steps': [\n"
        "    {'name': 'pick', 'block': 'race'},\n"
        "    {'name': 'after', 'target': 'context_value', 'key': 'outputs', 'depends_on': ['pick']}]}],\n"
        "  'parallel_blocks': [{'name': 'race', 'strategy': 'race', 'steps': [\n"
        "    {'target': 'patient', 'seconds': 1.0, 'value': 'slow'},\n"
        "    {'target': 'patient', 'seconds': 0.3, 'value': 'fast'}]}]}\n"
        "print(n3.dispatch(program).id, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**redis_cluster.env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    run_id = out.stdout.strip().splitlines()[-1]
    result = redis_cluster.n3.run(run_id).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.outputs["pick"] == "fast"  # type: ignore[union-attr]
    assert result.outputs["after"] == {"pick": "fast"}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def wide_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 4-process prefork worker, for max_concurrency."""
    running = start_cluster(redis_url, redis_url, "prefork", tmp_path_factory.mktemp("wide"), concurrency=4)
    yield running
    stop_cluster(running)


def test_max_concurrency_caps_the_block_across_the_cluster(wide_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    durations = [0.1, 0.5, 0.2, 0.4, 0.1, 0.3, 0.2, 0.1, 0.5, 0.2, 0.1, 0.3]
    steps = [{"target": "measured", "seconds": d, "tag": tag} for d in durations]
    started = time.monotonic()
    result = wide_cluster.n3.dispatch({"name": "mc", "max_concurrency": 2, "steps": steps}).get(timeout=WAIT)
    elapsed = time.monotonic() - started
    assert result.overall_status == "completed"
    client = redis.Redis.from_url(wide_cluster.env["N3_TEST_BACKEND"])
    try:
        peak = int(client.get(f"n3test:{tag}:peak") or 0)
    finally:
        client.close()
    assert peak == 2  # never above the cap, and the cap was used
    assert result.actual_max_concurrent is not None and result.actual_max_concurrent <= 2
    assert elapsed < sum(durations)  # two at a time, not one


def test_terminate_losers_on_prefork(redis_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    steps = [
        {"name": "stubborn", "target": "stubborn", "seconds": 6, "tag": tag},
        {"name": "fast", "target": "gated", "gate": tag, "value": "done"},
    ]
    handle = redis_cluster.n3.dispatch({"name": "t", "strategy": "race", "terminate_losers": True, "steps": steps})
    # The winner finishes only once the loser runs, so there is a running process to terminate.
    wait_until(
        lambda: started_steps(redis_cluster, tag) == 1,
        30,
        lambda: f"the stubborn step never started\n{redis_cluster.worker.log()}",
    )
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    try:
        (pid,) = (int(p) for p in client.lrange(started_key(tag), 0, -1))
        client.set(gate_key(tag), 1, ex=MARKER_TTL)
    finally:
        client.close()
    result = handle.get(timeout=WAIT)
    assert result.final_result == "done"
    final = settled_losers(redis_cluster, handle.id)
    entry = next(r for r in final.results if r.task_id == "stubborn")
    assert entry.metadata["outcome"] == "stopped"
    # Stopped by termination: the pool process running it is gone, well before its 6 s sleep ends
    # (a pool process that finishes a step lives on).
    wait_until(lambda: not alive(pid), 5, f"the pool process {pid} running the loser is still alive")


def unused(_: Any) -> None:  # keeps the Any import honest for type checkers
    return None


def test_a_step_timeout_fails_that_step(cluster: Cluster) -> None:
    steps = [
        {"name": "slow", "target": "patient", "seconds": 5, "timeout_seconds": 0.5},
        {"name": "async_slow", "target": "async_patient", "seconds": 5, "timeout_seconds": 0.5},
        {"name": "ok", "target": "echo", "value": 1, "timeout_seconds": 5},
    ]
    started = time.monotonic()
    result = cluster.n3.dispatch({"name": "st", "strategy": "collect", "steps": steps}).get(timeout=WAIT)
    assert time.monotonic() - started < 3
    assert result.final_result["ok"]["result"] == 1
    for name in ("slow", "async_slow"):
        assert result.final_result[name]["status"] == "failed"
        assert "StepTimeout" in result.final_result[name]["error"]


def test_celery_time_limits_stop_a_step_that_never_checks_on_prefork(redis_cluster: Cluster) -> None:
    steps = [{"name": "stubborn", "target": "stubborn", "seconds": 8, "timeout_seconds": 1}]
    started = time.monotonic()
    result = redis_cluster.n3.dispatch({"name": "st", "strategy": "collect", "steps": steps}).get(timeout=WAIT)
    assert time.monotonic() - started < 5
    assert result.final_result["stubborn"]["status"] == "failed"
    assert "StepTimeout" in result.final_result["stubborn"]["error"]


def test_a_loser_stopped_on_purpose_is_revoked_not_failed(redis_cluster: Cluster) -> None:
    tag = f"race-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "slow", "target": "patient", "seconds": 5, "tag": tag},
        {"name": "fast", "target": "patient", "seconds": 0.2, "value": 1, "after": tag},  # once slow runs
    ]
    handle = redis_cluster.n3.dispatch({"name": "r", "strategy": "race", "steps": steps})
    final = settled_losers(redis_cluster, handle.id)
    slow = next(r for r in final.results if r.task_id == "slow")
    assert slow.metadata["outcome"] == "stopped"
    meta = redis_cluster.app.backend.get_task_meta(slow.metadata["celery_task_id"], cache=False)
    assert meta["status"] == "REVOKED"


def test_a_cancel_before_any_worker_ran_still_ends_the_run(redis_cluster: Cluster) -> None:
    redis_cluster.worker.process.send_signal(19)  # SIGSTOP: nothing is consumed yet
    try:
        steps = [{"target": "echo", "value": i} for i in range(10)]
        handle = redis_cluster.n3.dispatch({"name": "c", "strategy": "collect", "steps": steps})
        handle.cancel()
    finally:
        redis_cluster.worker.process.send_signal(18)  # SIGCONT
    result = handle.get(timeout=WAIT)
    assert result.overall_status == "cancelled"


def test_a_step_whose_worker_process_dies_fails_and_its_block_ends(redis_cluster: Cluster) -> None:
    steps = [{"name": "ok", "target": "echo", "value": 1}, {"name": "dead", "target": "die"}]
    result = redis_cluster.n3.dispatch({"name": "lost", "strategy": "collect", "steps": steps}).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result["dead"]["status"] == "failed"
    assert "WorkerLostError" in result.final_result["dead"]["error"]
