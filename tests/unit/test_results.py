"""Result records: statuses as strings, JSON round trips, raise_for_status."""

from __future__ import annotations

import json

import pytest

from namel3ss_celery.errors import RunCancelled, RunFailed, RunTimedOut
from namel3ss_celery.results import (
    ParallelExecutionResult,
    ParallelTaskResult,
    RunStatus,
    TaskStatus,
    WorkflowResult,
    result_from_dict,
)


def block_result(status: RunStatus = RunStatus.COMPLETED, error_message: str | None = None) -> ParallelExecutionResult:
    return ParallelExecutionResult(
        block_name="b",
        strategy="all",
        total_tasks=2,
        overall_status=status,
        completed_tasks=1,
        failed_tasks=1,
        results=[
            ParallelTaskResult(
                "a",
                TaskStatus.COMPLETED,
                result={"n": 1},
                start_time=1.0,
                end_time=2.0,
                duration_ms=1000.0,
                metadata={"executed_on": "celery", "worker": "w1"},
            ),
            ParallelTaskResult("b", TaskStatus.FAILED, error="ValueError: bad", metadata={"executed_on": "celery"}),
        ],
        final_result={"a": {"n": 1}},
        aggregated_output=[{"n": 1}],
        error_message=error_message,
        metadata={"executed_on": "celery"},
    )


def test_statuses_compare_equal_to_strings() -> None:
    assert RunStatus.COMPLETED == "completed"
    assert TaskStatus.FAILED == "failed"
    assert str(RunStatus.TIMEOUT) == "timeout"
    assert block_result().overall_status == "completed"
    assert json.dumps({"s": RunStatus.CANCELLED}) == '{"s": "cancelled"}'


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (RunStatus.PENDING, False),
        (RunStatus.RUNNING, False),
        (RunStatus.COMPLETED, True),
        (RunStatus.FAILED, True),
        (RunStatus.TIMEOUT, True),
        (RunStatus.CANCELLED, True),
    ],
)
def test_final_statuses(status: RunStatus, final: bool) -> None:
    assert status.final is final


def test_task_result_round_trip() -> None:
    task = ParallelTaskResult("a", TaskStatus.CANCELLED, error="StepCancelled", metadata={"outcome": "stopped"})
    data = task.to_dict()
    assert data["status"] == "cancelled" and type(data["status"]) is str
    back = ParallelTaskResult.from_dict(json.loads(json.dumps(data)))
    assert back == task
    assert back.status is TaskStatus.CANCELLED


def test_block_result_round_trip_through_json() -> None:
    result = block_result(RunStatus.FAILED, "1 of 2 steps failed")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["overall_status"] == "failed"
    assert data["results"][1]["status"] == "failed"
    back = ParallelExecutionResult.from_dict(data)
    assert back == result
    assert back.overall_status is RunStatus.FAILED
    assert back.results[0].status is TaskStatus.COMPLETED


def test_from_dict_ignores_unknown_keys() -> None:
    data = {**block_result().to_dict(), "added_in_a_later_release": 1}
    assert ParallelExecutionResult.from_dict(data) == block_result()


def test_workflow_result_round_trip_through_json() -> None:
    result = WorkflowResult(
        run_id="r1",
        name="research",
        overall_status=RunStatus.COMPLETED,
        blocks={"analyse": block_result()},
        outputs={"fetch": ["celery"], "analyse": {"a": {"n": 1}}},
        final_result={"report": True},
        metadata={"kind": "workflow"},
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["blocks"]["analyse"]["overall_status"] == "completed"
    back = WorkflowResult.from_dict(data)
    assert back == result
    assert isinstance(back.blocks["analyse"], ParallelExecutionResult)


def test_result_from_dict_returns_the_records_own_kind() -> None:
    workflow = WorkflowResult(run_id="r", name="w", overall_status=RunStatus.FAILED, failed_node="n")
    assert result_from_dict(workflow.to_dict()) == workflow
    assert result_from_dict(block_result().to_dict()) == block_result()


def test_errors_list_each_failed_step() -> None:
    assert block_result().errors == ["b: ValueError: bad"]


def test_raise_for_status_returns_self_when_completed() -> None:
    result = block_result()
    assert result.raise_for_status() is result
    workflow = WorkflowResult(run_id="r", name="w", overall_status=RunStatus.COMPLETED)
    assert workflow.raise_for_status() is workflow


@pytest.mark.parametrize(
    ("status", "error"),
    [(RunStatus.FAILED, RunFailed), (RunStatus.TIMEOUT, RunTimedOut), (RunStatus.CANCELLED, RunCancelled)],
)
def test_block_raise_for_status(status: RunStatus, error: type[RunFailed]) -> None:
    with pytest.raises(error) as info:
        block_result(status, "it went wrong").raise_for_status()
    assert type(info.value) is error
    assert str(info.value) == f"block 'b' {status}: it went wrong"
    assert info.value.errors == ["b: ValueError: bad"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(RunStatus.FAILED, RunFailed), (RunStatus.TIMEOUT, RunTimedOut), (RunStatus.CANCELLED, RunCancelled)],
)
def test_workflow_raise_for_status(status: RunStatus, error: type[RunFailed]) -> None:
    workflow = WorkflowResult(
        run_id="r", name="w", overall_status=status, blocks={"b": block_result(status)}, error_message="node 'b': boom"
    )
    with pytest.raises(error, match="workflow 'w' .*: node 'b': boom") as info:
        workflow.raise_for_status()
    assert type(info.value) is error
    assert info.value.errors == ["b: ValueError: bad"]


def test_timed_out_and_cancelled_are_failures_too() -> None:
    assert issubclass(RunTimedOut, RunFailed)
    assert issubclass(RunCancelled, RunFailed)


def test_records_build_positionally_the_namel3ss_way() -> None:
    """Namel3ss code builds results positionally, overall_status after the times, with defaults."""
    task = ParallelTaskResult("t1")
    assert task.status == "pending"
    built = ParallelExecutionResult("b", "all", 2, 1, 1, 0, [task], {"t1": None}, None, 1.0, 2.0, 1000.0, "failed")
    assert built.overall_status == "failed" and built.completed_tasks == 1 and built.results == [task]
    assert ParallelExecutionResult("b", "all", 0, 0, 0, 0, []).overall_status == "pending"
