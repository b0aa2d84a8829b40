"""The conductor on the memory store, with a publisher that records what it is asked to send."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.compiler.steps import step_message
from namel3ss_celery.engine.advance import final_result
from namel3ss_celery.engine.conductor import Conductor
from namel3ss_celery.engine.decide import TIMED_OUT, Decision
from namel3ss_celery.engine.ports import Launching
from namel3ss_celery.engine.runner import StepOutcome
from namel3ss_celery.plan import fields
from namel3ss_celery.plan.kinds import Join, Outcome
from namel3ss_celery.plan.message import FedStep, StepMessage
from namel3ss_celery.plan.model import Plan, PlanNode
from namel3ss_celery.registry import Registry
from namel3ss_celery.results import ParallelExecutionResult, RunStatus, TaskStatus, WorkflowResult
from namel3ss_celery.spec import load_any
from namel3ss_celery.worker.store import MemoryStore

TTL = 60


@dataclass
class Prepared:
    first: list[StepMessage]
    feed: list[str]
    deadline: float | None


@dataclass
class Recorder:
    """A publisher that sends nothing: it keeps each step message, in order."""

    sent: list[StepMessage] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)

    def prepare_node(self, run_id: str, plan: Plan, node: PlanNode, context: dict[str, Any]) -> Prepared:
        block = node.block
        window = block.max_concurrency or len(block.steps)
        fed = window < len(block.steps)
        deadline = time.time() + block.timeout_seconds if block.timeout_seconds else None
        messages = [
            step_message(
                block, i, run_id=run_id, node=node.name, context=context, join=Join.COUNT, feed=fed, deadline=deadline
            )
            for i in range(len(block.steps))
        ]
        feed = [FedStep(m.target, m).encode() for m in messages[window:]]
        return Prepared(messages[:window], feed, deadline)

    def send_node(self, run_id: str, plan: Plan, node: PlanNode, prepared: Prepared, launching: Launching) -> None:
        self.sent.extend(prepared.first[launching.start :])

    def send_fed(self, item: FedStep) -> None:
        self.sent.append(item.message)

    def terminate(self, task_id: str) -> None:
        self.terminated.append(task_id)


def record_of(spec: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, str]:
    """The record ``dispatch`` writes for a new run of ``spec``."""
    plan = make_plan(load_any(spec))
    return {
        fields.KIND: plan.kind,
        fields.NAME: plan.name,
        fields.PLAN: plan.to_json(),
        fields.CONTEXT: json.dumps(context or {}),
        fields.STATUS: "running",
        fields.CREATED: repr(time.time()),
    }


def start(spec: dict[str, Any], context: dict[str, Any] | None = None) -> tuple[Conductor, Recorder, str]:
    store, recorder = MemoryStore(), Recorder()
    conductor = Conductor(lambda: store, recorder, Registry(), TTL)
    run_id = "run-1"
    store.create_run(run_id, record_of(spec, context), TTL)
    conductor.launch_roots(run_id)
    return conductor, recorder, run_id


def report(conductor: Conductor, message: StepMessage, status: TaskStatus, result: Any = None) -> None:
    """A step that ran, as the step task files it."""
    control = conductor.control(message)
    if not control.start(message.index, "w", "prefork", 1, f"task-{message.index}"):
        conductor.follow_up(conductor.skip(message, "w", f"task-{message.index}").follow_up)
        return
    now = time.time()
    outcome = StepOutcome(message.key, status, now, now, "w", f"task-{message.index}", result=result)
    if status == TaskStatus.FAILED:
        outcome.error = "ValueError: boom"
    conductor.follow_up(conductor.file(message, outcome))


def result_of(conductor: Conductor, run_id: str) -> ParallelExecutionResult | WorkflowResult | None:
    return final_result(conductor.store.run_record(run_id) or {})


def block(strategy: str, n: int, **more: Any) -> dict[str, Any]:
    return {"name": "b", "strategy": strategy, "steps": [{"target": "t", "name": f"s{i}"} for i in range(n)], **more}


def test_a_collect_block_ends_when_its_last_step_reports() -> None:
    conductor, recorder, run_id = start(block("collect", 3))
    assert [m.index for m in recorder.sent] == [0, 1, 2]
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 1)
    report(conductor, recorder.sent[1], TaskStatus.FAILED)
    assert result_of(conductor, run_id) is None  # one step still to report
    report(conductor, recorder.sent[2], TaskStatus.COMPLETED, 3)
    result = result_of(conductor, run_id)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == RunStatus.COMPLETED
    assert (result.completed_tasks, result.failed_tasks) == (2, 1)
    assert conductor.store.get_fields(run_id, [fields.STATUS, fields.DONE]) == ["completed", "1"]


def test_a_race_is_decided_by_its_first_finisher_and_rewritten_as_losers_report() -> None:
    conductor, recorder, run_id = start(block("race", 3))
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, "fast")
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED
    assert result.final_result == "fast"
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, "slow")  # never started: its block was decided
    report(conductor, recorder.sent[2], TaskStatus.COMPLETED, "late")
    outcomes = [r.metadata["outcome"] for r in result_of(conductor, run_id).results]  # type: ignore[union-attr]
    assert outcomes == [Outcome.NOT_STARTED, Outcome.WON, Outcome.NOT_STARTED]


def test_a_loser_that_ran_to_its_end_is_reported_so() -> None:
    conductor, recorder, run_id = start(block("race", 2))
    first, second = recorder.sent
    conductor.control(second).start(1, "w", "prefork", 1, "task-1")  # it started before the block was decided
    report(conductor, first, TaskStatus.COMPLETED, "won")
    now = time.time()
    conductor.follow_up(conductor.file(second, StepOutcome(second.key, TaskStatus.COMPLETED, now, now, result="x")))
    outcomes = [r.metadata["outcome"] for r in result_of(conductor, run_id).results]  # type: ignore[union-attr]
    assert outcomes == [Outcome.WON, Outcome.RAN_TO_END]


def test_fail_fast_ends_an_all_block_at_its_first_failure() -> None:
    conductor, recorder, run_id = start(block("all", 3, fail_fast=True))
    report(conductor, recorder.sent[2], TaskStatus.FAILED)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.FAILED
    assert "failed (fail_fast)" in (result.error_message or "")


def test_max_concurrency_feeds_one_step_per_finished_step() -> None:
    conductor, recorder, run_id = start(block("all", 4, max_concurrency=2))
    assert [m.index for m in recorder.sent] == [0, 1]
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert [m.index for m in recorder.sent] == [0, 1, 2]
    for message in list(recorder.sent[1:]):
        report(conductor, message, TaskStatus.COMPLETED, message.index)
    report(conductor, recorder.sent[3], TaskStatus.COMPLETED, 3)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED
    assert result.final_result == {"s0": 0, "s1": 1, "s2": 2, "s3": 3}


def test_a_deadline_ends_the_block_as_timeout_and_later_steps_never_start() -> None:
    conductor, recorder, run_id = start(block("all", 2, timeout_seconds=30))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    conductor.decide_and_settle(run_id, "b", TIMED_OUT)
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.TIMEOUT
    assert [r.metadata.get("outcome") for r in result.results] == [None, Outcome.NOT_STARTED]
    assert result.final_result == {"s0": 0}  # partial results are kept


def test_cancel_ends_the_running_block_and_nothing_after_it_runs() -> None:
    spec = {
        "parallel_blocks": [block("all", 1), {**block("all", 1), "name": "after", "depends_on": ["b"]}],
    }
    conductor, recorder, run_id = start(spec)
    conductor.cancel(run_id)
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    result = result_of(conductor, run_id)
    assert isinstance(result, WorkflowResult) and result.overall_status == RunStatus.CANCELLED
    assert [m.node for m in recorder.sent] == ["b"]


def test_a_step_that_stopped_for_a_cancel_before_the_cancel_decided_its_block_ends_it_as_cancelled() -> None:
    """A cancel marks the run cancelled, then decides its blocks; a step that sees the mark first and stops
    files before that decision. Under ``all`` with fail_fast its stop is no failure: the block is cancelled."""
    conductor, recorder, run_id = start(block("all", 3))
    message = recorder.sent[0]
    assert conductor.control(message).start(0, "w", "prefork", 1, "t0")
    conductor.store.set_fields(run_id, {fields.CANCELLED: "1"})  # the cancel's first write
    now = time.time()
    conductor.follow_up(conductor.file(message, StepOutcome(message.key, TaskStatus.CANCELLED, now, now, "w", "t0")))
    conductor.cancel(run_id)  # its decisions come second
    result = result_of(conductor, run_id)
    assert isinstance(result, ParallelExecutionResult)
    assert result.overall_status == RunStatus.CANCELLED, result.error_message


def test_a_workflow_hands_each_nodes_output_to_the_next() -> None:
    spec = {
        "workflows": [
            {
                "name": "w",
                "steps": [
                    {"name": "fetch", "target": "t"},
                    {"name": "report", "target": "t", "depends_on": ["fetch"]},
                ],
            }
        ]
    }
    conductor, recorder, run_id = start(spec, {"user": "ada"})
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, {"pages": 3})
    assert recorder.sent[1].node == "report"
    assert recorder.sent[1].context == {"user": "ada", "outputs": {"fetch": {"pages": 3}}}
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, "done")
    result = result_of(conductor, run_id)
    assert isinstance(result, WorkflowResult)
    assert (result.overall_status, result.final_result) == (RunStatus.COMPLETED, "done")


def test_a_fan_out_over_nothing_settles_at_once() -> None:
    spec = {
        "name": "b",
        "strategy": "collect",
        "steps": [],
        "fan_out": {"target": "t", "split_by": "items"},
    }
    conductor, recorder, run_id = start(spec, {"items": []})
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED
    assert recorder.sent == []


def test_a_duplicate_outcome_counts_once_and_settles_once() -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)  # delivered twice
    assert result_of(conductor, run_id) is None
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    result = result_of(conductor, run_id)
    assert result is not None and result.total_tasks == 2 and result.completed_tasks == 2


def test_a_step_delivered_again_after_its_block_ended_never_starts_and_changes_nothing() -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    for message in recorder.sent:
        report(conductor, message, TaskStatus.COMPLETED, message.index)
    before = conductor.store.run_record(run_id)
    again = recorder.sent[0]
    assert conductor.control(again).start(0, "w2", "prefork", 2, "task-0") is False
    skipped = conductor.skip(again, "w2", "task-0")
    assert (skipped.filed, skipped.follow_up) == (False, None)
    assert conductor.store.run_record(run_id) == before


def test_a_settle_naming_a_block_the_run_does_not_have_is_refused() -> None:
    conductor, recorder, run_id = start(block("all", 2))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    conductor.settle_node(run_id, "nope")  # no such block
    assert result_of(conductor, run_id) is None
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED


def test_a_settle_that_died_half_way_is_finished_at_the_blocks_deadline() -> None:
    conductor, recorder, run_id = start(block("collect", 2, timeout_seconds=30))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert conductor.store.claim(run_id, fields.settled("b"))  # its settler claimed it, then died
    assert result_of(conductor, run_id) is None
    assert conductor.enforce_deadlines(now=time.time() + 60) == 1
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.TIMEOUT
    assert conductor.store.due_deadlines(time.time() + 60, 10) == []


def test_a_block_settled_whole_leaves_no_deadline_behind() -> None:
    conductor, recorder, run_id = start(block("collect", 1, timeout_seconds=30))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert result_of(conductor, run_id) is not None
    assert conductor.store.due_deadlines(time.time() + 60, 10) == []


def test_a_settle_that_died_after_filing_the_blocks_result_ends_the_run_with_it() -> None:
    conductor, recorder, run_id = start(block("collect", 1, timeout_seconds=30))
    filed = ParallelExecutionResult(
        block_name="b", strategy="collect", total_tasks=1, overall_status=RunStatus.COMPLETED
    )
    conductor.store.claim(run_id, fields.settled("b"))
    conductor.store.set_fields(run_id, {fields.node_result("b"): json.dumps(filed.to_dict())})
    conductor.enforce_deadlines(now=time.time() + 60)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == RunStatus.COMPLETED and result.total_tasks == 1


def test_a_step_reporting_after_its_block_settled_and_its_deadline_passed_changes_nothing() -> None:
    conductor, recorder, run_id = start(block("collect", 1, timeout_seconds=30))
    first = recorder.sent[0]
    conductor.control(first).start(0, "w", "prefork", 1, "t0")  # it runs; a copy of it runs too
    report(conductor, first, TaskStatus.COMPLETED, 0)
    before = result_of(conductor, run_id)
    late = replace(first, deadline=time.time() - 1)  # the copy reports after the deadline
    now = time.time()
    conductor.follow_up(conductor.file(late, StepOutcome(late.key, TaskStatus.COMPLETED, now, now, result=0)))
    assert conductor.store.get_fields(run_id, [fields.decided("b")]) == [None]
    assert result_of(conductor, run_id) == before


def test_a_lost_outcome_filed_for_a_step_that_filed_its_own_decides_nothing() -> None:
    """A step succeeded and filed its outcome; then its worker's watchdog (or a lost pool process) files it
    as lost. What the step filed stays, and the lost outcome does not fail its fail_fast block."""
    conductor, recorder, run_id = start(block("all", 2, fail_fast=True))
    first, second = recorder.sent
    report(conductor, first, TaskStatus.COMPLETED, 1)
    conductor.file_lost_message(first, "task-0", "its worker w stopped answering", None)
    assert result_of(conductor, run_id) is None  # still waiting for s1: not failed by the lost outcome
    report(conductor, second, TaskStatus.COMPLETED, 2)
    result = result_of(conductor, run_id)
    assert result is not None and result.overall_status == "completed"
    assert result.completed_tasks == 2 and result.failed_tasks == 0


def test_a_decided_block_whose_decider_did_not_hear_it_won_is_settled_by_its_last_report() -> None:
    """A decision's claim went through but its reply was lost (the store's connection dropped), so its decider
    did not settle the block: the step that reports last does."""
    conductor, recorder, run_id = start(block("race", 2))
    first, second = recorder.sent
    for message in (first, second):
        assert conductor.control(message).start(message.index, "w", "prefork", 1, f"task-{message.index}")
    now = time.time()
    won = StepOutcome(first.key, TaskStatus.COMPLETED, now, now, "w", "task-0", result="first")
    conductor.store.record_step(run_id, "b", 0, won.envelope(), TTL)
    assert conductor.control(first).decide(Decision(RunStatus.COMPLETED, 0, "s0 won the race"))  # reply "lost"
    assert result_of(conductor, run_id) is None
    stopped = StepOutcome.stopped(second.key, "stopped: its block no longer needs it", Outcome.STOPPED)
    conductor.follow_up(conductor.file(second, stopped))
    result = result_of(conductor, run_id)
    assert isinstance(result, ParallelExecutionResult) and result.overall_status == "completed"
    assert result.final_result == "first"


def test_each_node_of_a_workflow_is_told_as_it_is_launched_and_as_it_ends_and_a_lone_block_is_not() -> None:
    spec = {
        "workflows": [
            {
                "name": "w",
                "steps": [
                    {"name": "fetch", "target": "t"},
                    {"name": "report", "target": "t", "depends_on": ["fetch"]},
                ],
            }
        ]
    }
    store, recorder = MemoryStore(), Recorder()
    conductor = Conductor(lambda: store, recorder, Registry(), TTL)
    told: list[tuple[str, str | None]] = []
    conductor.block_moved.append(
        lambda run_id, plan, node, result: told.append((node, None if result is None else str(result.overall_status)))
    )
    store.create_run("run-1", record_of(spec), TTL)
    conductor.launch_roots("run-1")
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 1)
    report(conductor, recorder.sent[1], TaskStatus.FAILED)
    assert told == [("fetch", None), ("fetch", "completed"), ("report", None), ("report", "failed")]

    told.clear()
    store.create_run("run-2", record_of(block("all", 1)), TTL)
    conductor.launch_roots("run-2")
    report(conductor, recorder.sent[2], TaskStatus.COMPLETED, 1)
    assert told == []  # a lone block's run is its block: the run's own events say it
