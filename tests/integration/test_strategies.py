"""all, collect and map_reduce on real workers, on Redis and RabbitMQ, prefork and threads."""

from __future__ import annotations

import time
from typing import Any

import pytest

from namel3ss_celery import RunFailed

from .conftest import Cluster

pytestmark = pytest.mark.integration

WAIT = 60


def block(strategy: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": f"{strategy}_block", "strategy": strategy, "steps": steps, **extra}


def celery_state(cluster: Cluster, result: Any, step_name: str) -> str:
    """The step's Celery state as the result backend has it (a final one, waited for a few seconds at most)."""
    entry = next(r for r in result.results if r.task_id == step_name)
    deadline = time.monotonic() + 5
    while True:
        state = str(cluster.app.backend.get_task_meta(entry.metadata["celery_task_id"], cache=False)["status"])
        if state not in ("PENDING", "STARTED") or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_all_runs_sync_and_async_steps(cluster: Cluster) -> None:
    steps = [
        {"name": "a", "target": "echo", "value": "x"},
        {"name": "b", "target": "async_double", "value": 21},
        {"name": "c", "target": "tests.integration.steps:add_one", "value": 1},
    ]
    result = cluster.n3.dispatch(block("all", steps)).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result == {"a": "x", "b": 42, "c": 2}
    assert result.completed_tasks == 3 and result.failed_tasks == 0
    assert {r.metadata["executed_on"] for r in result.results} == {"celery"}
    assert {r.metadata["worker"] for r in result.results} == {cluster.worker.hostname}
    assert celery_state(cluster, result, "b") == "SUCCESS"


def test_all_without_fail_fast_waits_and_names_every_failed_step(cluster: Cluster) -> None:
    steps = [
        {"name": "ok", "target": "echo", "value": 1},
        {"name": "bad", "target": "fail", "message": "bad input"},
        {"name": "worse", "target": "async_fail"},
    ]
    result = cluster.n3.dispatch(block("all", steps, fail_fast=False)).get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert result.failed_tasks == 2 and result.completed_tasks == 1
    assert "bad: ValueError: bad input" in result.error_message
    assert "worse: KeyError" in result.error_message
    assert celery_state(cluster, result, "bad") == "FAILURE"
    assert celery_state(cluster, result, "worse") == "FAILURE"
    with pytest.raises(RunFailed):
        result.raise_for_status()


def test_collect_completes_and_keeps_each_failure(cluster: Cluster) -> None:
    steps = [
        {"name": "ok", "target": "echo", "value": [1, 2]},
        {"name": "bad", "target": "fail", "message": "nope"},
        {"name": "async_ok", "target": "async_double", "value": 2},
    ]
    result = cluster.n3.dispatch(block("collect", steps)).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result["ok"]["result"] == [1, 2]
    assert result.final_result["async_ok"]["result"] == 4
    assert result.final_result["bad"]["status"] == "failed"
    assert result.final_result["bad"]["error"] == "ValueError: nope"
    assert celery_state(cluster, result, "bad") == "FAILURE"


@pytest.mark.parametrize(
    ("reducer", "values", "expected"),
    [
        ("sum", [1, 2, 3], 6),
        ("count", ["a", "b"], 2),
        ("concat", [[1], [2, 3]], [1, 2, 3]),
        ("concat", ["ab", "cd"], "abcd"),
        ("merge", [{"a": 1}, {"b": 2}], {"a": 1, "b": 2}),
        ("product", [2, 3, 4], 24),
    ],
)
def test_map_reduce_reducers(cluster: Cluster, reducer: str, values: list[Any], expected: Any) -> None:
    steps = [{"target": "echo", "value": v} for v in values]
    result = cluster.n3.dispatch(block("map_reduce", steps, reduce_function=reducer)).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result == expected


@pytest.mark.parametrize(("reducer", "empty"), [("sum", 0), ("count", 0), ("concat", []), ("merge", {})])
def test_map_reduce_of_no_steps_gives_the_empty_value(cluster: Cluster, reducer: str, empty: Any) -> None:
    result = cluster.n3.dispatch(block("map_reduce", [], reduce_function=reducer)).get(timeout=WAIT)
    assert result.overall_status == "completed"
    assert result.final_result == empty


def test_map_reduce_fails_when_a_step_fails(cluster: Cluster) -> None:
    steps = [{"target": "echo", "value": 1}, {"name": "bad", "target": "fail"}]
    result = cluster.n3.dispatch(block("map_reduce", steps, reduce_function="sum")).get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert "bad: ValueError" in result.error_message
    assert celery_state(cluster, result, "bad") == "FAILURE"


def test_steps_receive_the_context(cluster: Cluster) -> None:
    steps = [{"name": "user", "target": "context_value", "key": "user"}]
    result = cluster.n3.dispatch(block("all", steps), context={"user": "ada"}).get(timeout=WAIT)
    assert result.final_result == {"user": "ada"}


def test_a_result_json_cannot_carry_fails_the_step_clearly(cluster: Cluster) -> None:
    result = cluster.n3.dispatch(block("collect", [{"name": "odd", "target": "not_json"}])).get(timeout=WAIT)
    entry = result.final_result["odd"]
    assert entry["status"] == "failed"
    assert "JSON cannot carry" in entry["error"]
    assert celery_state(cluster, result, "odd") == "FAILURE"


@pytest.mark.parametrize("batch_size", [None, 2])
def test_fan_out_hands_each_item_or_batch_to_a_step(cluster: Cluster, batch_size: int | None) -> None:
    fan_out: dict[str, Any] = {"target": "fanned", "split_by": "numbers"}
    if batch_size:
        fan_out["batch_size"] = batch_size
    block = {"name": "fan", "strategy": "map_reduce", "reduce_function": "count", "fan_out": fan_out}
    result = cluster.n3.dispatch(block, context={"numbers": [1, 2, 3, 4]}).get(timeout=WAIT)
    assert result.overall_status == "completed"
    if batch_size is None:
        assert result.final_result == 4
        assert sorted(r.result for r in result.results) == [1, 2, 3, 4]
    else:
        assert result.final_result == 2
        assert [r.result for r in result.results] == [[1, 2], [3, 4]]


def test_fan_out_over_a_missing_key_fails_the_block_clearly(cluster: Cluster) -> None:
    block = {"name": "fan", "strategy": "collect", "fan_out": {"target": "fanned", "split_by": "outputs.nothing"}}
    result = cluster.n3.dispatch(block).get(timeout=WAIT)
    assert result.overall_status == "failed"
    assert "context has no key 'outputs.nothing'" in (result.error_message or "")


@pytest.mark.parametrize("fail", [False, True])
def test_a_large_all_block_is_a_chord_and_settles_either_way(cluster: Cluster, fail: bool) -> None:
    steps: list[dict[str, Any]] = [{"target": "echo", "value": i} for i in range(20)]
    if fail:
        steps[7] = {"name": "bad", "target": "fail"}
    result = cluster.n3.dispatch(block("all", steps, fail_fast=False)).get(timeout=WAIT)
    meta = cluster.app.backend.get_task_meta(result.results[0].metadata["celery_task_id"])
    assert meta["status"] == "SUCCESS"
    if fail:
        assert result.overall_status == "failed" and result.failed_tasks == 1
        assert "bad: ValueError" in (result.error_message or "")
    else:
        assert result.overall_status == "completed"
        assert result.final_result == {f"step_{i}": i for i in range(20)}


def test_a_large_map_reduce_block_is_a_chord(cluster: Cluster) -> None:
    steps = [{"target": "echo", "value": i} for i in range(30)]
    result = cluster.n3.dispatch(block("map_reduce", steps, reduce_function="sum")).get(timeout=WAIT)
    assert result.final_result == sum(range(30))
