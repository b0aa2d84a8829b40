"""Workflows and programs: the DAG of blocks and nodes, and the references between them."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.errors import SpecError
from namel3ss_celery.spec import (
    ProgramSpec,
    WorkflowNodeSpec,
    WorkflowSpec,
    load_model,
    load_program,
)
from namel3ss_celery.spec.program import check_dag


def block(name: str, *depends_on: str) -> dict[str, Any]:
    return {"name": name, "steps": [{"target": "t"}], "depends_on": list(depends_on)}


def test_program_keeps_every_section() -> None:
    program = load_program(
        {
            "name": "p",
            "parallel_blocks": [block("a"), block("b", "a")],
            "worker_pools": [{"name": "gpu", "queue_name": "gpu"}],
            "task_queues": [{"name": "q"}],
            "distributed_configs": [{"worker_pool": "gpu"}],
            "event_triggers": [{"name": "t", "event_type": "e", "trigger_target": "w"}],
            "event_handlers": [{"name": "h"}],
            "workflows": [{"name": "w", "steps": [{"name": "n", "block": "b"}]}],
        }
    )
    assert [b.name for b in program.parallel_blocks] == ["a", "b"]
    assert program.block("b").depends_on == ["a"]
    assert program.worker_pools[0].queue_name == "gpu"
    assert program.workflows[0].steps[0].block == "b"
    with pytest.raises(KeyError):
        program.block("missing")


def test_an_empty_program_is_valid() -> None:
    assert load_program({}) == ProgramSpec()


@pytest.mark.parametrize(
    ("section", "items", "message"),
    [
        ("parallel_blocks", [block("a"), block("a")], "two parallel blocks are named 'a'"),
        (
            "worker_pools",
            [{"name": "p", "queue_name": "q"}, {"name": "p", "queue_name": "r"}],
            "two worker pools are named 'p'",
        ),
        ("task_queues", [{"name": "q"}, {"name": "q"}], "two task queues are named 'q'"),
        ("workflows", [{"name": "w", "steps": [{"name": "n", "target": "t"}]}] * 2, "two workflows are named 'w'"),
    ],
)
def test_duplicate_names_are_refused(section: str, items: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_program({section: items})


def test_depends_on_a_missing_block_is_refused() -> None:
    with pytest.raises(SpecError, match="parallel block 'b' depends on 'nope', which does not exist"):
        load_program({"parallel_blocks": [block("a"), block("b", "nope")]})


@pytest.mark.parametrize(
    ("blocks", "cycle"),
    [
        ([block("a", "b"), block("b", "a")], "a -> b -> a"),
        ([block("a", "c"), block("b", "a"), block("c", "b")], "a -> c -> b -> a"),
        ([block("x"), block("a", "x", "b"), block("b", "a")], "a -> b -> a"),
    ],
)
def test_a_cycle_is_refused_and_shown(blocks: list[dict[str, Any]], cycle: str) -> None:
    with pytest.raises(SpecError, match="cycle") as info:
        load_program({"parallel_blocks": blocks})
    assert cycle in str(info.value)


def test_a_block_depending_on_itself_is_refused() -> None:
    with pytest.raises(SpecError, match="'a' depends on itself"):
        load_program({"parallel_blocks": [block("a", "a")]})


@pytest.mark.parametrize(
    "node",
    [
        {"name": "n", "target": "t", "block": "b"},
        {"name": "n"},
        {"name": "n", "query": "only payload"},
    ],
)
def test_a_node_names_exactly_one_of_target_and_block(node: dict[str, Any]) -> None:
    program = {
        "parallel_blocks": [block("b")],
        "workflows": [{"name": "w", "steps": [{"name": "ok", "target": "t"}, node]}],
    }
    with pytest.raises(SpecError, match="exactly one of 'target'") as info:
        load_program(program)
    assert info.value.path == "workflows[0].steps[1]"


def test_a_workflow_naming_an_unknown_block_is_refused() -> None:
    program = {
        "parallel_blocks": [block("known")],
        "workflows": [{"name": "w", "steps": [{"name": "n", "block": "missing"}]}],
    }
    with pytest.raises(SpecError, match="names block 'missing', which is not in parallel_blocks") as info:
        load_program(program)
    assert "known" in str(info.value)


def test_workflow_node_keeps_its_payload() -> None:
    node = WorkflowNodeSpec.model_validate({"name": "fetch", "target": "fetch_sources", "query": "celery"})
    assert node.model_dump(exclude_none=True) == {
        "name": "fetch",
        "target": "fetch_sources",
        "query": "celery",
        "depends_on": [],
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"name": "a", "target": "t", "depends_on": ["zz"]}], "node 'a' depends on 'zz', which does not exist"),
        (
            [{"name": "a", "target": "t", "depends_on": ["b"]}, {"name": "b", "target": "t", "depends_on": ["a"]}],
            "nodes form a cycle: a -> b -> a",
        ),
        ([{"name": "a", "target": "t", "depends_on": ["a"]}], "node 'a' depends on itself"),
        ([], "at least 1 item"),
    ],
)
def test_workflow_dag_errors(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_model(WorkflowSpec, {"name": "w", "steps": steps})


def test_duplicate_workflow_node_names_are_refused() -> None:
    with pytest.raises(SpecError):
        load_model(WorkflowSpec, {"name": "w", "steps": [{"name": "a", "target": "t"}, {"name": "a", "target": "u"}]})


@pytest.mark.parametrize(
    ("edges", "order"),
    [
        ({"a": [], "b": ["a"], "c": ["b"]}, ["a", "b", "c"]),
        ({"c": ["b"], "b": ["a"], "a": []}, ["a", "b", "c"]),
        ({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}, ["a", "b", "c", "d"]),
        ({}, []),
    ],
)
def test_check_dag_returns_dependencies_first(edges: dict[str, list[str]], order: list[str]) -> None:
    assert check_dag(edges, "node") == order
