"""Settling a block from its step envelopes, for all, collect and map_reduce."""

from __future__ import annotations

import json
from typing import Any

import pytest

from namel3ss_celery.engine.settle import LOST, settle_block
from namel3ss_celery.registry import Registry
from namel3ss_celery.results import RunStatus, TaskStatus
from namel3ss_celery.spec import ParallelBlockSpec


def envelope(
    key: str,
    status: str = "completed",
    result: Any = None,
    error: str | None = None,
    start: float = 100.0,
    end: float = 100.5,
) -> str:
    return json.dumps(
        {
            "key": key,
            "status": status,
            "result": result,
            "error": error,
            "start": start,
            "end": end,
            "worker": "w1@host",
            "task_id": f"celery-{key}",
        }
    )


def block(strategy: str = "all", names: tuple[str | None, ...] = ("a", "b", "c"), **fields: Any) -> ParallelBlockSpec:
    steps = [{"target": "t"} if name is None else {"name": name, "target": "t"} for name in names]
    return ParallelBlockSpec(name="blk", strategy=strategy, steps=steps, **fields)


def test_all_completed() -> None:
    envelopes = {
        0: envelope("a", result=1, start=100.0, end=101.0),
        1: envelope("b", result={"x": 2}, start=100.5, end=102.0),
        2: envelope("c", result=[3], start=101.0, end=101.5),
    }
    result = settle_block(block(), envelopes, Registry())
    assert result.overall_status == "completed"
    assert result.final_result == {"a": 1, "b": {"x": 2}, "c": [3]}
    assert result.aggregated_output == [1, {"x": 2}, [3]]
    assert (result.total_tasks, result.completed_tasks, result.failed_tasks, result.cancelled_tasks) == (3, 3, 0, 0)
    assert (result.start_time, result.end_time, result.total_duration_ms) == (100.0, 102.0, 2000.0)
    assert result.error_message is None
    assert (result.block_name, result.strategy, result.metadata) == ("blk", "all", {"executed_on": "celery"})
    first = result.results[0]
    assert (first.task_id, first.status, first.result, first.duration_ms) == ("a", TaskStatus.COMPLETED, 1, 1000.0)
    assert first.metadata == {"executed_on": "celery", "worker": "w1@host", "celery_task_id": "celery-a", "target": "t"}
    result.raise_for_status()


def test_a_retried_and_dead_lettered_step_says_so_in_its_metadata() -> None:
    filed = json.loads(envelope("a", status="failed", error="boom"))
    result = settle_block(block(), {0: json.dumps({**filed, "attempts": 3, "dead_letter": "q.dead"})}, Registry())
    assert (result.results[0].metadata["attempts"], result.results[0].metadata["dead_letter"]) == (3, "q.dead")


def test_all_fails_when_a_step_fails() -> None:
    envelopes = {
        0: envelope("a", result=1),
        1: envelope("b", "failed", error="ValueError: bad"),
        2: envelope("c", result=3),
    }
    result = settle_block(block(), envelopes, Registry())
    assert result.overall_status == "failed"
    assert result.final_result == {"a": 1, "c": 3}
    assert result.aggregated_output == [1, 3]
    assert (result.completed_tasks, result.failed_tasks) == (2, 1)
    assert result.error_message == "1 of 3 steps failed: b: ValueError: bad"
    assert result.errors == ["b: ValueError: bad"]


def test_unnamed_steps_are_filed_as_step_i() -> None:
    envelopes = {0: envelope("step_0", result="x"), 1: envelope("named", result="y")}
    result = settle_block(block(names=(None, "named")), envelopes, Registry())
    assert result.final_result == {"step_0": "x", "named": "y"}


@pytest.mark.parametrize("strategy", ["all", "collect"])
def test_a_missing_envelope_is_a_failed_step(strategy: str) -> None:
    result = settle_block(block(strategy, names=("a", "b")), {0: envelope("a", result=1)}, Registry())
    lost = result.results[1]
    assert (lost.task_id, lost.status, lost.error) == ("b", TaskStatus.FAILED, LOST)
    assert lost.metadata == {"executed_on": "celery", "target": "t"}
    assert (result.completed_tasks, result.failed_tasks) == (1, 1)
    expected = "failed" if strategy == "all" else "completed"
    assert result.overall_status == expected


def test_a_cancelled_step_fails_an_all_block() -> None:
    envelopes = {0: envelope("a", result=1), 1: envelope("b", "cancelled", error="StepCancelled")}
    result = settle_block(block(names=("a", "b")), envelopes, Registry())
    assert result.overall_status == "failed"
    assert (result.completed_tasks, result.failed_tasks, result.cancelled_tasks) == (1, 0, 1)
    assert result.error_message == "1 of 2 steps cancelled: b: StepCancelled"  # as cancelled_tasks counts it


def test_collect_keeps_every_outcome_and_completes() -> None:
    envelopes = {
        0: envelope("a", result={"ok": True}, start=10.0, end=10.25),
        1: envelope("b", "failed", error="LookupError: no document named 'kafka'", start=10.0, end=10.5),
    }
    result = settle_block(block("collect", names=("a", "b")), envelopes, Registry())
    assert result.overall_status == "completed"
    assert result.final_result == {
        "a": {"result": {"ok": True}, "status": "completed", "duration_ms": 250.0},
        "b": {"error": "LookupError: no document named 'kafka'", "status": "failed", "duration_ms": 500.0},
    }
    assert result.aggregated_output == [{"ok": True}]
    assert (result.completed_tasks, result.failed_tasks) == (1, 1)
    assert result.error_message is None


@pytest.mark.parametrize(
    ("reducer", "results", "reduced"),
    [
        ("sum", [1, 2, 3], 6),
        ("count", ["x", "y", "z"], 3),
        ("concat", [[1], [2], [3, 4]], [1, 2, 3, 4]),
        ("concat", ["a", "b", "c"], "abc"),
        ("merge", [{"a": 1}, {"b": 2}, {"a": 3}], {"a": 3, "b": 2}),
    ],
)
def test_map_reduce_reduces_in_step_order(reducer: str, results: list[Any], reduced: Any) -> None:
    # envelopes filed out of order still reduce in step order
    envelopes = {i: envelope(k, result=r) for i, (k, r) in reversed(list(enumerate(zip("abc", results, strict=False))))}
    result = settle_block(block("map_reduce", reduce_function=reducer), envelopes, Registry())
    assert result.overall_status == "completed"
    assert result.final_result == reduced
    assert result.aggregated_output == results


@pytest.mark.parametrize(("reducer", "empty"), [("sum", 0), ("count", 0), ("concat", []), ("merge", {})])
def test_map_reduce_of_no_steps_is_the_empty_value(reducer: str, empty: Any) -> None:
    result = settle_block(block("map_reduce", names=(), reduce_function=reducer), {}, Registry())
    assert (result.overall_status, result.final_result, result.total_tasks) == ("completed", empty, 0)
    assert result.actual_max_concurrent == 0


def test_map_reduce_uses_a_registered_reducer() -> None:
    registry = Registry()
    registry.add_reducer("longest", lambda results: max(results, key=len))
    envelopes = {0: envelope("a", result="ab"), 1: envelope("b", result="abcd"), 2: envelope("c", result="abc")}
    result = settle_block(block("map_reduce", reduce_function="longest"), envelopes, Registry(parent=registry))
    assert result.final_result == "abcd"


def test_map_reduce_fails_when_a_step_fails() -> None:
    envelopes = {
        0: envelope("a", result=1),
        1: envelope("b", "failed", error="ValueError: x"),
        2: envelope("c", result=3),
    }
    result = settle_block(block("map_reduce", reduce_function="sum"), envelopes, Registry())
    assert result.overall_status == "failed"
    assert result.final_result is None
    assert result.error_message == "1 of 3 steps failed: b: ValueError: x"


def test_a_failing_reducer_fails_the_block_with_its_error() -> None:
    envelopes = {0: envelope("a", result=[1]), 1: envelope("b", result="two"), 2: envelope("c", result=[3])}
    result = settle_block(block("map_reduce", reduce_function="concat"), envelopes, Registry())
    assert result.overall_status == "failed"
    assert result.final_result is None
    assert (
        result.error_message
        == "reducer 'concat' failed: TypeError: concat needs all lists or all strings, got list, str"
    )
    assert result.completed_tasks == 3


def test_a_registered_reducer_that_raises_fails_the_block() -> None:
    registry = Registry()
    registry.add_reducer("explode", lambda results: results[99])
    envelopes = {0: envelope("a", result=1)}
    result = settle_block(block("map_reduce", names=("a",), reduce_function="explode"), envelopes, registry)
    assert result.overall_status == "failed"
    assert result.error_message == "reducer 'explode' failed: IndexError: list index out of range"


@pytest.mark.parametrize(
    ("times", "peak"),
    [
        ([(0, 1), (1, 2), (2, 3)], 1),
        ([(0, 2), (1, 3), (2, 4)], 2),
        ([(0, 10), (1, 2), (3, 4)], 2),
        ([(0, 1), (0, 1), (0, 1)], 3),
        ([(0, 5), (1, 4), (2, 3)], 3),
    ],
)
def test_actual_max_concurrent_is_computed_from_times(times: list[tuple[float, float]], peak: int) -> None:
    envelopes = {
        i: envelope(k, result=i, start=s, end=e) for i, (k, (s, e)) in enumerate(zip("abc", times, strict=False))
    }
    result = settle_block(block(), envelopes, Registry())
    assert result.actual_max_concurrent == peak


def test_max_concurrent_and_executed_on_are_reported() -> None:
    result = settle_block(block(names=("a",), max_concurrency=4), {0: envelope("a")}, Registry(), executed_on="local")
    assert result.max_concurrent == 4
    assert result.metadata == {"executed_on": "local"}


def test_a_block_of_no_steps_completes_empty() -> None:
    result = settle_block(block(names=()), {}, Registry())
    assert (result.overall_status, result.final_result, result.aggregated_output) == (RunStatus.COMPLETED, {}, [])
    assert (result.start_time, result.end_time, result.total_duration_ms) == (None, None, None)


def test_a_reducer_unknown_to_this_worker_fails_the_block() -> None:
    result = settle_block(
        block("map_reduce", names=("a",), reduce_function="only_on_client"), {0: envelope("a")}, Registry()
    )
    assert result.overall_status == "failed"
    assert "only_on_client" in (result.error_message or "")
