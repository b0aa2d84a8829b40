"""The local executor on its own: concurrency, block control, stopping at a failed node, refusals. No broker.

Nothing here is timed: steps that must run at the same time meet (each waits until all of its
meeting run), and steps that must be stopped say so themselves. bench/local.py prints the times.
"""

from __future__ import annotations

import asyncio
import threading
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
from tests.waiting import wait_until

CALLED: list[str] = []  # steps that started
FINISHED: list[str] = []  # steps that ran to their end
STOPPED: list[str] = []  # steps that stopped when asked (or were cancelled)
CALLS: Counter[str] = Counter()
ARRIVED: Counter[str] = Counter()  # steps arrived at each meeting
ARRIVED_LOCK = threading.Lock()
MEET_LIMIT = 20.0  # seconds a step waits for the rest of its meeting: reached only when they cannot run at once


def _arrived(step: dict[str, Any], since: float) -> bool:
    """Whether every one of the ``parties`` steps of this step's ``meeting`` has started."""
    with ARRIVED_LOCK:
        arrived = ARRIVED[step["meeting"]]
    if arrived >= int(step["parties"]):
        return True
    if time.monotonic() - since > MEET_LIMIT:
        raise TimeoutError(f"only {arrived} of {step['parties']} steps of meeting {step['meeting']} ran at once")
    return False


def _arrive(step: dict[str, Any]) -> float:
    CALLED.append(step["name"])
    if "meeting" in step:
        with ARRIVED_LOCK:
            ARRIVED[step["meeting"]] += 1
    return time.monotonic()


def meet(step: dict[str, Any]) -> None:
    """Mark the step started; with a ``meeting``, return only once all its ``parties`` steps have started."""
    since = _arrive(step)
    while "meeting" in step and not _arrived(step, since):
        time.sleep(0.005)


async def ameet(step: dict[str, Any]) -> None:
    """``meet`` on the event loop."""
    since = _arrive(step)
    while "meeting" in step and not _arrived(step, since):
        await asyncio.sleep(0.005)


def sync_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    meet(step)
    time.sleep(float(step.get("seconds", 0)))
    FINISHED.append(step["name"])
    return str(step["name"])


async def async_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    await ameet(step)
    try:
        await asyncio.sleep(float(step.get("seconds", 0)))
    except asyncio.CancelledError:
        STOPPED.append(step["name"])
        raise
    FINISHED.append(step["name"])
    return str(step["name"])


def patient(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Sleeps in slices, stopping when asked."""
    meet(step)
    deadline = time.monotonic() + float(step["seconds"])
    while time.monotonic() < deadline:
        if cancelled():
            STOPPED.append(step["name"])
            raise StepCancelled("asked to stop")
        time.sleep(0.01)
    FINISHED.append(step["name"])
    return str(step["name"])


def fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    if "meeting" in step:
        meet(step)
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
    for record in (CALLED, FINISHED, STOPPED, CALLS, ARRIVED):
        record.clear()
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


def meeting(prefix: str, seconds: float = 0.0) -> list[dict[str, Any]]:
    """Six steps, three sync and three async, each of which goes on only once all six have started."""
    targets = ["sync_sleep"] * 3 + ["async_sleep"] * 3
    return [
        {"name": f"{prefix}{i}", "target": t, "meeting": prefix, "parties": 6, "seconds": seconds}
        for i, t in enumerate(targets)
    ]


def all_at_once(results: list[Any]) -> bool:
    """Some moment lies inside every step's reported start and end."""
    return max(r.start_time for r in results) < min(r.end_time for r in results)


def outcomes(result: ParallelExecutionResult) -> dict[str, tuple[str, str | None]]:
    return {r.task_id: (str(r.status), r.metadata.get("outcome")) for r in result.results}


def assert_stopped(result: ParallelExecutionResult, *names: str) -> None:
    """The block was decided before these steps ended: its result did not wait for them, and they stop.

    A sync step whose thread had not begun when its run ended never begins; one that had, stops.
    """
    assert all(outcomes(result)[name] == ("cancelled", "stopping") for name in names), outcomes(result)
    assert result.metadata["losers_pending"] == len(names)
    wait_until(
        lambda: all(name in STOPPED for name in names if name in CALLED),
        10,
        lambda: f"{names} were asked to stop; started: {CALLED}, stopped: {STOPPED}",
    )
    assert not set(names) & set(FINISHED)


def test_a_blocks_sync_and_async_steps_run_at_once(executor: LocalExecutor) -> None:
    result = run_block(executor, steps=meeting("s", 0.3))
    assert result.error_message is None  # one after another, the first would wait for the others, and fail
    assert result.final_result == {f"s{i}": f"s{i}" for i in range(6)}
    assert result.actual_max_concurrent == 6
    assert all_at_once(result.results)
    assert all(r.duration_ms is not None and r.duration_ms >= 300 for r in result.results)
    assert {r.metadata["executed_on"] for r in result.results} == {"local"} == {result.metadata["executed_on"]}


def test_independent_nodes_run_at_once_and_pass_their_outputs_on(executor: LocalExecutor) -> None:
    program = {
        "parallel_blocks": [
            {"name": "a", "steps": [{"name": "a", "target": "async_sleep", "meeting": "ab", "parties": 2}]},
            {"name": "b", "steps": [{"name": "b", "target": "sync_sleep", "meeting": "ab", "parties": 2}]},
            {"name": "c", "depends_on": ["a", "b"], "steps": [{"name": "seen", "target": "outputs"}]},
        ]
    }
    result = executor.run_sync(plan(program), {"outputs": {"given": 1}})
    assert isinstance(result, WorkflowResult)
    assert result.overall_status == "completed", result.error_message  # a and b met: they ran at once
    assert all_at_once([result.blocks["a"], result.blocks["b"]])
    assert result.final_result == {"seen": {"given": 1, "a": {"a": "a"}, "b": {"b": "b"}}}


def test_a_failed_node_ends_the_run_and_nothing_after_it_starts(executor: LocalExecutor) -> None:
    program = {
        "parallel_blocks": [
            {"name": "bad", "steps": [{"name": "x", "target": "fail"}]},
            {"name": "slow", "steps": [{"name": "slow", "target": "async_sleep", "seconds": 30}]},
            {"name": "after", "depends_on": ["bad"], "steps": [{"name": "after", "target": "async_sleep"}]},
        ]
    }
    result = executor.run_sync(plan(program))
    assert isinstance(result, WorkflowResult)
    assert (result.overall_status, result.failed_node) == ("failed", "bad")
    assert (
        result.error_message
        == "node 'bad': step 'x' failed (fail_fast); 1 of 1 steps failed: x: ValueError: on purpose"
    )
    assert "after" not in CALLED
    # The run did not wait for the 30 s node: it had started, and was cancelled as the run ended.
    assert ("slow" in CALLED, "slow" in FINISHED, "slow" in STOPPED) == (True, False, True)


def test_fail_fast_decides_at_the_first_failure_and_stops_the_rest(executor: LocalExecutor) -> None:
    together = {"meeting": "m", "parties": 3}  # 'bad' fails once the two others run
    steps = [
        {"name": "bad", "target": "fail", **together},
        {"name": "slow", "target": "patient", "seconds": 30, **together},
        {"name": "slower", "target": "async_sleep", "seconds": 30, **together},
    ]
    result = run_block(executor, steps=steps)
    assert result.overall_status == "failed"
    assert result.metadata["decided"] == "step 'bad' failed (fail_fast)"
    assert outcomes(result)["bad"] == ("failed", None)
    assert_stopped(result, "slow", "slower")
    assert sorted(STOPPED) == ["slow", "slower"]


def test_without_fail_fast_every_step_reports(executor: LocalExecutor) -> None:
    steps = [{"name": "bad", "target": "fail"}, {"name": "slow", "target": "sync_sleep", "seconds": 0.2}]
    result = run_block(executor, steps=steps, fail_fast=False)
    assert outcomes(result) == {"bad": ("failed", None), "slow": ("completed", None)}
    assert result.error_message == "1 of 2 steps failed: bad: ValueError: on purpose"


@pytest.mark.parametrize("strategy", ["race", "any_success"])
def test_the_first_success_wins_and_the_losers_are_stopped(executor: LocalExecutor, strategy: str) -> None:
    together = {"meeting": "m", "parties": 3}  # 'fast' ends once the two others run
    steps = [
        {"name": "slow", "target": "patient", "seconds": 30, **together},
        {"name": "fast", "target": "async_sleep", "seconds": 0.1, **together},
        {"name": "slower", "target": "async_sleep", "seconds": 30, **together},
    ]
    result = run_block(executor, strategy=strategy, steps=steps)
    assert (result.overall_status, result.final_result, result.metadata["winner"]) == ("completed", "fast", "fast")
    assert outcomes(result)["fast"] == ("completed", "won")
    assert_stopped(result, "slow", "slower")
    assert sorted(STOPPED) == ["slow", "slower"]


def test_any_success_fails_only_when_every_step_failed(executor: LocalExecutor) -> None:
    result = run_block(executor, strategy="any_success", steps=[{"name": "a", "target": "fail"}, {"target": "fail"}])
    assert (result.overall_status, result.metadata["decided"]) == ("failed", "every step failed")
    assert result.error_message.endswith(
        "2 of 2 steps failed: a: ValueError: on purpose; step_1: ValueError: on purpose"
    )


def test_a_deadline_ends_the_block_as_timeout_with_its_partial_results(executor: LocalExecutor) -> None:
    steps = [{"name": "quick", "target": "sync_sleep"}, {"name": "slow", "target": "patient", "seconds": 30}]
    result = run_block(executor, strategy="collect", steps=steps, timeout_seconds=0.3)
    assert result.overall_status == "timeout"
    assert result.final_result["quick"]["result"] == "quick"
    assert result.final_result["slow"]["status"] == "cancelled"
    assert_stopped(result, "slow")


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
    assert result.results[0].metadata["attempts"] == 3
    result = run_block(
        executor, steps=[{"name": "g", "target": "flaky", "failures": 5}], retry_failed=True, max_retries=1
    )
    assert result.error_message.endswith("g: ConnectionError: call 2")
    assert result.results[0].metadata["attempts"] == 2


def test_async_steps_are_judged_as_on_a_worker(executor: LocalExecutor) -> None:
    steps = [{"name": "stop", "target": "async_cancelled"}, {"name": "odd", "target": "async_not_json"}]
    result = run_block(executor, strategy="collect", steps=steps)
    assert result.final_result["stop"]["error"] == "StepCancelled: asked to stop"
    assert outcomes(result)["stop"] == ("cancelled", "stopped")
    assert result.final_result["odd"]["error"].startswith("StepResultError: step 'odd' (async_not_json) returned")
    assert all(r.duration_ms is not None and r.duration_ms >= 50 for r in result.results)


def test_runs_share_one_event_loop(executor: LocalExecutor) -> None:
    def steps(run: int) -> list[dict[str, Any]]:  # each waits until all six steps of the three runs have started
        return [
            {"name": f"r{run}-sync", "target": "sync_sleep", "meeting": "all", "parties": 6},
            {"name": f"r{run}-async", "target": "async_sleep", "meeting": "all", "parties": 6},
        ]

    async def main() -> list[Any]:
        return await asyncio.gather(*(executor.run(plan({"name": f"b{i}", "steps": steps(i)})) for i in range(3)))

    results = asyncio.run(main())
    assert [(r.overall_status, r.error_message) for r in results] == [("completed", None)] * 3
    assert all_at_once([step for r in results for step in r.results])


def test_refusals_come_before_any_step_runs(executor: LocalExecutor) -> None:
    good = plan({"name": "b", "steps": [{"name": "s", "target": "sync_sleep"}]})
    with pytest.raises(SpecError) as info:
        executor.run_sync(good, {"when": object()})
    assert info.value.path == "context"
    unknown = plan({"name": "b", "steps": [{"name": "s", "target": "sync_sleep"}, {"target": "nowhere"}]})
    with pytest.raises(UnknownTarget):
        executor.run_sync(unknown)
    assert CALLED == []
