"""Loading specs from dicts, YAML and JSON files, pydantic models and (Namel3ss-like) dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from namel3ss_celery.errors import SpecError
from namel3ss_celery.spec import (
    DistributedExecutionSpec,
    EventHandlerSpec,
    EventTriggerSpec,
    ParallelBlockSpec,
    ParallelStrategy,
    ProgramSpec,
    TaskQueueSpec,
    WorkerPoolSpec,
    WorkflowSpec,
    load_any,
    load_model,
    load_program,
)

MODELS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (ParallelBlockSpec, {"name": "b", "strategy": "collect", "steps": [{"name": "s", "target": "t", "query": "q"}]}),
    (WorkerPoolSpec, {"name": "gpu", "queue_name": "gpu", "max_workers": 4, "scaling_metric": "cpu"}),
    (TaskQueueSpec, {"name": "jobs", "queue_type": "rabbitmq", "dead_letter_queue": "jobs.dlq"}),
    (DistributedExecutionSpec, {"worker_pool": "gpu", "failure_mode": "fail_fast"}),
    (EventTriggerSpec, {"name": "nightly", "event_type": "schedule", "trigger_target": "report"}),
    (EventHandlerSpec, {"name": "h", "event_types": ["a", "b"], "route_to": "q"}),
    (
        WorkflowSpec,
        {"name": "w", "steps": [{"name": "a", "target": "t"}, {"name": "b", "target": "u", "depends_on": ["a"]}]},
    ),
    (ProgramSpec, {"name": "p", "parallel_blocks": [{"name": "b", "steps": []}]}),
]


def write(tmp_path: Path, fmt: str, data: dict[str, Any]) -> Path:
    path = tmp_path / f"spec.{fmt}"
    path.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(("model", "data"), MODELS, ids=[m.__name__ for m, _ in MODELS])
@pytest.mark.parametrize("source", ["dict", "yaml", "yml", "json", "str-path"])
def test_every_model_loads_from_dict_yaml_and_json(
    tmp_path: Path, model: type[BaseModel], data: dict[str, Any], source: str
) -> None:
    expected = model.model_validate(data)
    if source == "dict":
        loaded = load_model(model, data)
    elif source == "str-path":
        loaded = load_model(model, str(write(tmp_path, "yaml", data)))
    else:
        loaded = load_model(model, write(tmp_path, source, data))
    assert loaded == expected
    assert isinstance(loaded, model)


def test_an_instance_of_the_model_is_returned_as_is() -> None:
    block = ParallelBlockSpec(name="b", steps=[])
    assert load_model(ParallelBlockSpec, block) is block


def test_a_model_of_another_kind_is_revalidated() -> None:
    workflow = WorkflowSpec(name="w", steps=[{"name": "a", "target": "t"}])
    with pytest.raises(SpecError, match="unknown key"):
        load_model(ParallelBlockSpec, workflow)


def test_load_program_reads_the_example_files() -> None:
    program = load_program(Path("examples/research.yaml"))
    assert [w.name for w in program.workflows] == ["research"]
    assert program.block("analysis_batch").strategy == ParallelStrategy.MAP_REDUCE


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read program file") as info:
        load_program(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "parallel_blocks: [unclosed\n", "not valid YAML"),
        ("bad.yml", "a: b: c\n", "not valid YAML"),
        ("bad.json", '{"parallel_blocks": [}', "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "holds a mapping at the top, not list"),
        ("empty.yaml", "", "holds a mapping at the top, not NoneType"),
        ("scalar.json", "3", "holds a mapping at the top, not int"),
    ],
)
def test_unparseable_files_name_the_path(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=message) as info:
        load_program(path)
    assert info.value.path == str(path)


def test_a_file_with_a_bad_field_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "yaml", {"parallel_blocks": [{"name": "b", "steps": [], "strategy": "nope"}]})
    with pytest.raises(SpecError) as info:
        load_program(path)
    assert info.value.path == "parallel_blocks[0].strategy"


@pytest.mark.parametrize("source", [42, None, ["a"]])
def test_an_unloadable_source_is_a_spec_error(source: Any) -> None:
    with pytest.raises(SpecError, match="cannot load a spec from"):
        load_program(source)


# --- Namel3ss-like dataclasses -------------------------------------------------


class Strategy(Enum):
    ALL = "all"
    MAP_REDUCE = "map_reduce"


@dataclass
class Block:
    name: str
    steps: list[dict[str, Any]]
    strategy: Strategy = Strategy.ALL
    reduce_function: str | None = None
    depends_on: list[str] = field(default_factory=list)


@dataclass
class Program:
    parallel_blocks: list[Block]
    name: str | None = None


def test_load_from_a_dataclass_with_enum_members() -> None:
    spec = Block(name="b", steps=[{"target": "t", "n": 1}], strategy=Strategy.MAP_REDUCE, reduce_function="sum")
    block = load_model(ParallelBlockSpec, spec)
    assert block.strategy is ParallelStrategy.MAP_REDUCE
    assert block.reduce_function == "sum"
    assert block.steps[0].payload() == {"target": "t", "kind": "tool", "n": 1}


def test_load_a_program_of_nested_dataclasses() -> None:
    program = load_program(Program(parallel_blocks=[Block("a", []), Block("b", [], depends_on=["a"])], name="p"))
    assert program.name == "p"
    assert [b.name for b in program.parallel_blocks] == ["a", "b"]
    assert program.block("b").strategy is ParallelStrategy.ALL


def test_a_dataclass_with_a_bad_field_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="needs reduce_function"):
        load_model(ParallelBlockSpec, Block(name="b", steps=[], strategy=Strategy.MAP_REDUCE))


# --- load_any: which kind of spec a source is ----------------------------------


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ({"name": "b", "steps": [{"target": "t"}]}, ParallelBlockSpec),
        ({"name": "b", "strategy": "collect", "fan_out": {"target": "t", "split_by": "items"}}, ParallelBlockSpec),
        ({"name": "w", "description": "one node", "steps": [{"name": "a", "target": "t"}]}, WorkflowSpec),
        (
            {"name": "w", "steps": [{"name": "a", "target": "t"}, {"name": "b", "target": "t", "depends_on": ["a"]}]},
            WorkflowSpec,
        ),
        ({"parallel_blocks": [{"name": "b", "steps": []}]}, ProgramSpec),
        ({"workflows": []}, ProgramSpec),
        ({"worker_pools": []}, ProgramSpec),
    ],
)
def test_load_any_picks_the_kind(source: dict[str, Any], kind: type[BaseModel]) -> None:
    assert type(load_any(source)) is kind


def test_load_any_with_a_path_loads_a_program(tmp_path: Path) -> None:
    path = write(tmp_path, "json", {"parallel_blocks": [{"name": "b", "steps": []}]})
    assert isinstance(load_any(path), ProgramSpec)
    assert isinstance(load_any(str(path)), ProgramSpec)


@pytest.mark.parametrize(
    "spec",
    [
        ParallelBlockSpec(name="b", steps=[]),
        WorkflowSpec(name="w", steps=[{"name": "a", "target": "t"}]),
        ProgramSpec(),
    ],
)
def test_load_any_returns_specs_as_they_are(spec: BaseModel) -> None:
    assert load_any(spec) is spec  # type: ignore[arg-type]
