"""Plans of blocks, workflows and programs, and how a run moves on as its nodes settle."""

from __future__ import annotations

import json
from typing import Any

import pytest

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.engine.advance import final_result, node_settled
from namel3ss_celery.errors import SpecError
from namel3ss_celery.plan.model import Plan
from namel3ss_celery.results import (
    ParallelExecutionResult,
    ParallelTaskResult,
    RunStatus,
    TaskStatus,
    WorkflowResult,
)
from namel3ss_celery.spec import ParallelBlockSpec, ParallelStrategy, load_program
from namel3ss_celery.worker.store import MemoryStore

TTL = 60


def blocks(*specs: tuple[str, list[str]]) -> list[dict[str, Any]]:
    return [{"name": name, "steps": [{"target": "t"}], "depends_on": deps} for name, deps in specs]


def done(name: str, output: Any = None, single: bool = False) -> ParallelExecutionResult:
    """A completed block result; a single-step node's output is its one step's result."""
    return ParallelExecutionResult(
        name,
        "all",
        1,
        overall_status=RunStatus.COMPLETED,
        completed_tasks=1,
        results=[ParallelTaskResult(name if single else "s", TaskStatus.COMPLETED, result=output)],
        final_result=output if single else {"s": output},
    )


def failed(name: str, error: str = "boom") -> ParallelExecutionResult:
    return ParallelExecutionResult(
        name,
        "all",
        1,
        overall_status=RunStatus.FAILED,
        failed_tasks=1,
        error_message=error,
        results=[ParallelTaskResult("s", TaskStatus.FAILED, error="ValueError: x")],
    )


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.finished = 0

    def finish(self, run_id: str, fields: Any, ttl: int, claim: str | None = None) -> bool:
        written = super().finish(run_id, fields, ttl, claim)
        self.finished += written
        return written


RESEARCH = {
    "parallel_blocks": [
        {
            "name": "batch",
            "strategy": "map_reduce",
            "reduce_function": "merge",
            "steps": [{"target": "keywords", "doc": "celery"}],
        }
    ],
    "workflows": [
        {
            "name": "research",
            "steps": [
                {"name": "fetch", "target": "fetch_sources", "query": "queue"},
                {"name": "analyse", "block": "batch", "depends_on": ["fetch"]},
                {"name": "report", "target": "write_report", "depends_on": ["analyse"]},
            ],
        }
    ],
}


def test_plan_of_a_block() -> None:
    block = ParallelBlockSpec(name="b", steps=[{"target": "t"}])
    plan = make_plan(block)
    assert (plan.kind, plan.name, [n.name for n in plan.nodes]) == ("block", "b", ["b"])
    assert plan.nodes[0].block is block
    assert plan.nodes[0].single is False
    assert plan.by_name["b"] is plan.nodes[0]


def test_plan_of_a_program_without_workflows_is_in_dependency_order() -> None:
    program = load_program(
        {
            "name": "pipe",
            "parallel_blocks": blocks(
                ("report", ["left", "right"]), ("left", ["fetch"]), ("right", ["fetch"]), ("fetch", [])
            ),
        }
    )
    plan = make_plan(program)
    assert (plan.kind, plan.name) == ("program", "pipe")
    assert [n.name for n in plan.nodes] == ["fetch", "left", "right", "report"]
    assert plan.by_name["report"].depends_on == ("left", "right")
    assert plan.sinks() == ["report"]
    assert make_plan(load_program({"parallel_blocks": blocks(("a", []))})).name == "program"


def test_plan_of_a_program_with_one_workflow() -> None:
    plan = make_plan(load_program(RESEARCH))
    assert (plan.kind, plan.name) == ("workflow", "research")
    assert [(n.name, n.depends_on, n.single) for n in plan.nodes] == [
        ("fetch", (), True),
        ("analyse", ("fetch",), False),
        ("report", ("analyse",), True),
    ]
    fetch = plan.by_name["fetch"].block
    assert (fetch.name, fetch.strategy, len(fetch.steps)) == ("fetch", ParallelStrategy.ALL, 1)
    assert fetch.steps[0].payload() == {"name": "fetch", "target": "fetch_sources", "kind": "tool", "query": "queue"}
    assert plan.by_name["analyse"].block.reduce_function == "merge"


def test_a_program_with_several_workflows_needs_a_choice() -> None:
    program = load_program(
        {"workflows": [{"name": n, "steps": [{"name": "s", "target": "t"}]} for n in ("one", "two")]}
    )
    with pytest.raises(ValueError, match="several workflows \\(one, two\\)"):
        make_plan(program)
    assert make_plan(program, workflow="two").name == "two"
    with pytest.raises(SpecError, match="no workflow named 'three'"):
        make_plan(program, workflow="three")


@pytest.mark.parametrize("spec", [RESEARCH, {"parallel_blocks": blocks(("a", []), ("b", ["a"]))}])
def test_plan_json_round_trip(spec: dict[str, Any]) -> None:
    plan = make_plan(load_program(spec))
    back = Plan.from_json(plan.to_json())
    assert back == plan
    assert set(back.by_name) == {n.name for n in plan.nodes}
    assert json.loads(plan.to_json())["nodes"][0]["name"] == plan.nodes[0].name


def test_node_output_is_the_step_result_or_the_block_result() -> None:
    plan = make_plan(load_program(RESEARCH))
    assert plan.by_name["fetch"].output(done("fetch", ["celery"], single=True)) == ["celery"]
    assert plan.by_name["analyse"].output(done("analyse", 7)) == {"s": 7}


def test_a_workflow_launches_each_node_once_its_dependencies_completed() -> None:
    store = MemoryStore()
    plan = make_plan(load_program(RESEARCH))
    store.create_run("r", {"plan": plan.to_json(), "created": "1000"}, TTL)

    first = node_settled(store, "r", plan, "fetch", done("fetch", ["celery"], single=True), TTL)
    assert [n.name for n in first.launch] == ["analyse"]
    assert (first.outputs, first.final) == ({"fetch": ["celery"]}, None)

    second = node_settled(store, "r", plan, "analyse", done("analyse", {"queue": 5}), TTL)
    assert [n.name for n in second.launch] == ["report"]

    last = node_settled(store, "r", plan, "report", done("report", {"pages": 1}, single=True), TTL)
    assert last.launch == []
    final = last.final
    assert isinstance(final, WorkflowResult)
    assert (final.run_id, final.name, final.overall_status, final.failed_node) == ("r", "research", "completed", None)
    assert final.final_result == {"pages": 1}
    assert final.outputs == {"fetch": ["celery"], "analyse": {"s": {"queue": 5}}, "report": {"pages": 1}}
    assert set(final.blocks) == {"analyse"}
    assert final.metadata["nodes"] == {"fetch": "completed", "analyse": "completed", "report": "completed"}
    assert final.start_time == 1000.0
    assert store.wait("r", 0) == json.dumps(final.to_dict())
    record = store.run_record("r")
    assert record is not None and record["status"] == "completed"
    assert final_result(record) == final


def test_a_node_waits_for_all_of_its_dependencies() -> None:
    store = MemoryStore()
    store.create_run("r", {}, TTL)
    plan = make_plan(
        load_program({"parallel_blocks": blocks(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))})
    )
    assert [n.name for n in node_settled(store, "r", plan, "a", done("a", 1), TTL).launch] == ["b", "c"]
    assert node_settled(store, "r", plan, "b", done("b", 2), TTL).launch == []
    assert [n.name for n in node_settled(store, "r", plan, "c", done("c", 3), TTL).launch] == ["d"]
    final = node_settled(store, "r", plan, "d", done("d", 4), TTL).final
    assert final is not None and final.final_result == {"s": 4}
    assert final.overall_status == "completed"


def test_several_sinks_give_a_final_result_per_sink() -> None:
    store = MemoryStore()
    store.create_run("r", {}, TTL)
    plan = make_plan(load_program({"parallel_blocks": blocks(("a", []), ("b", []))}))
    node_settled(store, "r", plan, "a", done("a", 1), TTL)
    final = node_settled(store, "r", plan, "b", done("b", 2), TTL).final
    assert final is not None and final.final_result == {"a": {"s": 1}, "b": {"s": 2}}


def test_the_first_failure_ends_the_run() -> None:
    store = MemoryStore()
    store.create_run("r", {}, TTL)
    plan = make_plan(load_program({"parallel_blocks": blocks(("a", []), ("b", ["a"]))}))
    advance = node_settled(store, "r", plan, "a", failed("a", "1 of 1 steps failed: s: ValueError: x"), TTL)
    assert advance.launch == []
    final = advance.final
    assert isinstance(final, WorkflowResult)
    assert (final.overall_status, final.failed_node, final.final_result) == ("failed", "a", None)
    assert final.error_message == "node 'a': 1 of 1 steps failed: s: ValueError: x"
    assert store.wait("r", 0) == json.dumps(final.to_dict())
    record = store.run_record("r")
    assert record is not None and record["status"] == "failed"
    assert final_result(record).failed_node == "a"  # type: ignore[union-attr]


def test_nothing_launches_after_the_run_failed() -> None:
    store = MemoryStore()
    store.create_run("r", {}, TTL)
    plan = make_plan(load_program({"parallel_blocks": blocks(("a", []), ("b", []), ("c", ["b"]))}))
    assert node_settled(store, "r", plan, "a", failed("a"), TTL).final is not None
    assert node_settled(store, "r", plan, "b", done("b", 1), TTL).launch == []


def test_claims_make_settling_idempotent() -> None:
    store = CountingStore()
    store.create_run("r", {}, TTL)
    plan = make_plan(load_program({"parallel_blocks": blocks(("a", []), ("b", ["a"]))}))
    assert [n.name for n in node_settled(store, "r", plan, "a", done("a"), TTL).launch] == ["b"]
    assert node_settled(store, "r", plan, "a", done("a"), TTL).launch == []
    assert node_settled(store, "r", plan, "b", done("b"), TTL).final is not None
    assert node_settled(store, "r", plan, "b", done("b"), TTL).final is not None
    assert store.finished == 1


def test_a_block_run_ends_with_the_blocks_own_result() -> None:
    store = MemoryStore()
    store.create_run("r", {}, TTL)
    block = ParallelBlockSpec(name="b", steps=[{"target": "t"}])
    result = done("b", 5)
    advance = node_settled(store, "r", make_plan(block), "b", result, TTL)
    assert advance.final == result
    record = store.run_record("r")
    assert record is not None
    assert final_result(record) == result
    assert final_result({}) is None
