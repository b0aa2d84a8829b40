"""The run handle on the memory store: status, result, progress, cancel, its argument checks."""

from __future__ import annotations

import json
import threading
import time

import pytest

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.errors import InvalidArgument, UnknownRun, WaitTimeout
from namel3ss_celery.plan import fields
from namel3ss_celery.results import ParallelExecutionResult, RunStatus
from namel3ss_celery.runs import RunHandle
from namel3ss_celery.spec import load_any
from namel3ss_celery.worker.store import MemoryStore

BLOCK = {"name": "b", "strategy": "collect", "steps": [{"target": "t"}, {"target": "t"}]}
cancelled: list[str] = []  # the run ids the handles' canceller was asked to cancel


def running(store: MemoryStore, run_id: str = "r") -> RunHandle:
    plan = make_plan(load_any(BLOCK))
    record = {fields.PLAN: plan.to_json(), fields.STATUS: "running", fields.KIND: "block", fields.NAME: "b"}
    store.create_run(run_id, record, 60)
    return RunHandle(lambda: store, cancelled.append, run_id)


def finish(store: MemoryStore, run_id: str = "r") -> ParallelExecutionResult:
    result = ParallelExecutionResult(
        block_name="b", strategy="collect", total_tasks=0, overall_status=RunStatus.COMPLETED
    )
    store.finish(run_id, {fields.STATUS: "completed", fields.RESULT: json.dumps(result.to_dict())}, 60)
    return result


def test_a_running_run_reports_running_and_its_progress() -> None:
    store = MemoryStore()
    handle = running(store)
    assert handle.status() == RunStatus.RUNNING
    store.set_fields("r", {fields.launched("b"): "1"})
    store.record_step("r", "b", 0, "{}", 60)
    (row,) = handle.progress()
    assert (row.node, row.done, row.total, row.state) == ("b", 1, 2, "running")


def test_get_returns_the_result_once_the_run_ends_in_another_thread() -> None:
    store = MemoryStore()
    handle = running(store)
    threading.Timer(0.05, finish, args=(store,)).start()
    result = handle.get(timeout=10)
    assert isinstance(result, ParallelExecutionResult) and result.overall_status == RunStatus.COMPLETED
    assert handle.status() == RunStatus.COMPLETED


def test_get_raises_wait_timeout_when_the_wait_runs_out_and_the_run_goes_on() -> None:
    store = MemoryStore()
    handle = running(store)
    began = time.monotonic()
    with pytest.raises(WaitTimeout, match="still running"):
        handle.get(timeout=0.05)
    assert time.monotonic() - began < 5
    assert handle.status() == RunStatus.RUNNING


@pytest.mark.parametrize("timeout", [None, "2", -1, float("nan"), float("inf")])
def test_get_refuses_a_timeout_that_is_not_a_bound(timeout: object) -> None:
    handle = running(MemoryStore())
    with pytest.raises(InvalidArgument, match="timeout"):
        handle.get(timeout=timeout)  # type: ignore[arg-type]


def test_cancel_asks_the_canceller_only_while_the_run_goes_on() -> None:
    store = MemoryStore()
    handle = running(store, "c1")
    handle.cancel()
    assert cancelled[-1] == "c1"
    finish(store, "c1")
    count = len(cancelled)
    handle.cancel()  # it ended: nothing to cancel
    assert len(cancelled) == count


def test_an_unknown_run_says_so() -> None:
    handle = RunHandle(lambda: MemoryStore(), cancelled.append, "nope")
    with pytest.raises(UnknownRun):
        handle.status()
    with pytest.raises(UnknownRun):
        handle.get(timeout=0.05)
