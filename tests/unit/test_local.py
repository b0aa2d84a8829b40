"""The local executor on its own: concurrency, block control, stopping at a failed node, refusals. No broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from namel3ss_celery import SpecError, StepCancelled, UnknownTarget, cancelled
from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.local import LocalExecutor
from namel3ss_celery.plan.model import Plan
from namel3ss_celery.registry import Registry
from namel3ss_celery.results import ParallelExecutionResult, WorkflowResult
from namel3ss_celery.spec import load_any

CALLED: list[str] = []
CALLS: Counter[str] = Counter()


def sync_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    CALLED.append(step["name"])
    time.sleep(float(step.get("seconds", 0)))
    return str(step["name"])


async def async_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    CALLED.append(step["name"])
    await asyncio.sleep(float(step.get("seconds", 0)))
    return str(step["name"])


def patient(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Sleeps in slices, stopping when asked."""
    deadline = time.monotonic() + float(step["seconds"])
    while time.monotonic() < deadline:
        if cancelled():
            raise StepCancelled("asked to stop")
        time.sleep(0.01)
    return str(step["name"])


def fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    raise ValueError("on purpose")


def flaky(step: dict[str, Any], context: dict[str, Any]) -> int:
    CALLS[step["name"]] += 1
    if CALLS[step["name"]] <= int(step["failures"]):
        raise ConnectionError(f"call {CALLS[step['name']]}")
    return CALLS[step["name"]]


async def async_cancelled(step: dict[str, Any], context: dict[str, Any]) -> None:
    await asyncio.sleep(0.05)
    raise StepCancelled("asked to stop")


async def async_not_json(step: dict[str, Any], context: dict[str, Any]) -> Any:
    await asyncio.sleep(0.05)
    return {1, 2}


def outputs(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return context["outputs"]


STEPS = (sync_sleep, async_sleep, patient, fail, flaky, async_cancelled, async_not_json, outputs)


@pytest.fixture
def executor() -> LocalExecutor:
    CALLED.clear()
    CALLS.clear()
    registry = Registry()
    for function in STEPS:
        registry.add_step(function.__name__, function)
    return LocalExecutor(registry)


def plan(spec: dict[str, Any]) -> Plan:
    return make_plan(load_any(spec))


def run_block(executor: LocalExecutor, **block: Any) -> ParallelExecutionResult:
    result = executor.run_sync(plan({"name": "b", **block}))
    assert isinstance(result, ParallelExecutionResult)
    return result


def sleeps(prefix: str, seconds: float) -> list[dict[str, Any]]:
    targets = ["sync_sleep"] * 3 + ["async_sleep"] * 3
    return [{"name": f"{prefix}{i}", "target": t, "seconds": seconds} for i, t in enumerate(targets)]


def outcomes(result: ParallelExecutionResult) -> dict[str, tuple[str, str | None]]:
    return {r.task_id: (str(r.status), r.metadata.get("outcome")) for r in result.results}


def test_a_blocks_sync_and_async_steps_run_at_once(executor: LocalExecutor) -> None:
    started = time.monotonic()
    result = run_block(executor, steps=sleeps("s", 0.3))
    assert time.monotonic() - started < 1.0  # one after another: 1.8s
    assert result.final_result == {f"s{i}": f"s{i}" for i in range(6)}
    assert result.actual_max_concurrent == 6
    assert all(r.duration_ms is not None and r.duration_ms >= 300 for r in result.results)
    assert {r.metadata["executed_on"] for r in result.results} == {"local"} == {result.metadata["executed_on"]}


def test_independent_nodes_run_at_once_and_pass_their_outputs_on(executor: LocalExecutor) -> None:
    program = {
        "parallel_blocks": [
            {"name": "a", "steps": [{"name": "a", "target": "async_sleep", "seconds": 0.4}]},
            {"name": "b", "steps": [{"name": "b", "target": "sync_sleep", "seconds": 0.4}]},
            {"name": "c", "depends_on": ["a", "b"], "steps": [{"name": "seen", "target": "outputs"}]},
        ]
    }
    started = time.monotonic()
    result = executor.run_sync(plan(program), {"outputs": {"given": 1}})
    assert time.monotonic() - started < 0.75
    assert result.final_result == {"seen": {"given": 1, "a": {"a": "a"}, "b": {"b": "b"}}}


def test_a_failed_node_ends_the_run_and_nothing_after_it_starts(executor: LocalExecutor) -> None:
    program = {
        "parallel_blocks": [
            {"name": "bad", "steps": [{"name": "x", "target": "fail"}]},
            {"name": "slow", "steps": [{"name": "slow", "target": "async_sleep", "seconds": 30}]},
            {"name": "after", "depends_on": ["bad"], "steps": [{"name": "after", "target": "async_sleep"}]},
        ]
    }
    started = time.monotonic()
    result = executor.run_sync(plan(program))
    assert time.monotonic() - started < 5
    assert isinstance(result, WorkflowResult)
    assert (result.overall_status, result.failed_node) == ("failed", "bad")
    assert (
        result.error_message
        == "node 'bad': step 'x' failed (fail_fast); 1 of 1 steps failed: x: ValueError: on purpose"
    )
    assert "after" not in CALLED


def test_fail_fast_decides_at_the_first_failure_and_stops_the_rest(executor: LocalExecutor) -> None:
    steps = [
        {"name": "bad", "target": "fail"},
        {"name": "slow", "target": "patient", "seconds": 30},
        {"name": "slower", "target": "async_sleep", "seconds": 30},
    ]
    started = time.monotonic()
    result = run_block(executor, steps=steps)
    assert time.monotonic() - started < 5
    assert result.overall_status == "failed"
    assert result.metadata["decided"] == "step 'bad' failed (fail_fast)"
    assert outcomes(result)["bad"] == ("failed", None)
    assert {outcomes(result)[k][0] for k in ("slow", "slower")} == {"cancelled"}


def test_without_fail_fast_every_step_reports(executor: LocalExecutor) -> None:
    steps = [{"name": "bad", "target": "fail"}, {"name": "slow", "target": "sync_sleep", "seconds": 0.2}]
    result = run_block(executor, steps=steps, fail_fast=False)
    assert outcomes(result) == {"bad": ("failed", None), "slow": ("completed", None)}
    assert result.error_message == "1 of 2 steps failed: bad: ValueError: on purpose"


@pytest.mark.parametrize("strategy", ["race", "any_success"])
def test_the_first_success_wins_and_the_losers_are_stopped(executor: LocalExecutor, strategy: str) -> None:
    steps = [
        {"name": "slow", "target": "patient", "seconds": 30},
        {"name": "fast", "target": "async_sleep", "seconds": 0.1},
        {"name": "slower", "target": "async_sleep", "seconds": 30},
    ]
    started = time.monotonic()
    result = run_block(executor, strategy=strategy, steps=steps)
    assert time.monotonic() - started < 5
    assert (result.overall_status, result.final_result, result.metadata["winner"]) == ("completed", "fast", "fast")
    assert outcomes(result)["fast"] == ("completed", "won")
    assert {outcomes(result)[k][0] for k in ("slow", "slower")} == {"cancelled"}


def test_any_success_fails_only_when_every_step_failed(executor: LocalExecutor) -> None:
    result = run_block(executor, strategy="any_success", steps=[{"name": "a", "target": "fail"}, {"target": "fail"}])
    assert (result.overall_status, result.metadata["decided"]) == ("failed", "every step failed")
    assert result.error_message.endswith(
        "2 of 2 steps failed: a: ValueError: on purpose; step_1: ValueError: on purpose"
    )


def test_a_deadline_ends_the_block_as_timeout_with_its_partial_results(executor: LocalExecutor) -> None:
    steps = [{"name": "quick", "target": "sync_sleep"}, {"name": "slow", "target": "patient", "seconds": 30}]
    started = time.monotonic()
    result = run_block(executor, strategy="collect", steps=steps, timeout_seconds=0.3)
    assert time.monotonic() - started < 5
    assert result.overall_status == "timeout"
    assert result.final_result["quick"]["result"] == "quick"
    assert result.final_result["slow"]["status"] == "cancelled"


def test_max_concurrency_bounds_the_steps_running_at_once(executor: LocalExecutor) -> None:
    steps = [{"name": f"s{i}", "target": "async_sleep", "seconds": 0.1} for i in range(6)]
    result = run_block(executor, strategy="collect", steps=steps, max_concurrency=2)
    assert result.completed_tasks == 6
    assert result.actual_max_concurrent == 2


def test_steps_beyond_the_window_never_start_once_the_block_is_decided(executor: LocalExecutor) -> None:
    steps = [{"name": "bad", "target": "fail"}, {"name": "next", "target": "sync_sleep"}]
    result = run_block(executor, steps=steps, max_concurrency=1)
    assert outcomes(result) == {"bad": ("failed", None), "next": ("cancelled", "not_started")}
    assert result.results[1].error == "not started: step 'bad' failed (fail_fast)"
    assert CALLED == []


def test_retry_failed_retries_a_failed_step(executor: LocalExecutor) -> None:
    steps = [{"name": "f", "target": "flaky", "failures": 2}]
    result = run_block(executor, steps=steps, retry_failed=True, max_retries=2)
    assert (result.overall_status, result.final_result) == ("completed", {"f": 3})
    result = run_block(
        executor, steps=[{"name": "g", "target": "flaky", "failures": 5}], retry_failed=True, max_retries=1
    )
    assert result.error_message.endswith("g: ConnectionError: call 2")


def test_async_steps_are_judged_as_on_a_worker(executor: LocalExecutor) -> None:
    steps = [{"name": "stop", "target": "async_cancelled"}, {"name": "odd", "target": "async_not_json"}]
    result = run_block(executor, strategy="collect", steps=steps)
    assert result.final_result["stop"]["error"] == "StepCancelled: asked to stop"
    assert outcomes(result)["stop"] == ("cancelled", "stopped")
    assert result.final_result["odd"]["error"].startswith("StepResultError: step 'odd' (async_not_json) returned")
    assert all(r.duration_ms is not None and r.duration_ms >= 50 for r in result.results)


def test_runs_share_one_event_loop(executor: LocalExecutor) -> None:
    async def main() -> list[Any]:
        runs = [executor.run(plan({"name": f"b{i}", "steps": sleeps(f"r{i}", 0.3)})) for i in range(3)]
        return await asyncio.gather(*runs)

    started = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - started < 1.5
    assert [r.overall_status for r in results] == ["completed"] * 3


def test_refusals_come_before_any_step_runs(executor: LocalExecutor) -> None:
    good = plan({"name": "b", "steps": [{"name": "s", "target": "sync_sleep"}]})
    with pytest.raises(SpecError) as info:
        executor.run_sync(good, {"when": object()})
    assert info.value.path == "context"
    unknown = plan({"name": "b", "steps": [{"name": "s", "target": "sync_sleep"}, {"target": "nowhere"}]})
    with pytest.raises(UnknownTarget):
        executor.run_sync(unknown)
    assert CALLED == []
