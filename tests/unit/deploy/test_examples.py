"""The files shipped under deploy/examples are what render() gives today, and the example program is sound."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

from namel3ss_celery.routing import pool_queues, transport_options
from namel3ss_celery.spec import load_program

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "deploy" / "examples"


def render_examples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_examples", ROOT / "deploy" / "render_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_files_are_exactly_what_render_gives() -> None:
    expected = render_examples().rendered()
    shipped = {path.relative_to(EXAMPLES) for path in EXAMPLES.rglob("*") if path.is_file()}
    assert shipped == set(expected), "run: python deploy/render_examples.py"
    for path, text in expected.items():
        assert (EXAMPLES / path).read_text(encoding="utf-8") == text, (
            f"{path} is stale: python deploy/render_examples.py"
        )


def test_the_example_program_has_what_its_comment_promises() -> None:
    program = load_program(ROOT / "examples" / "pools.yaml")
    assert [pool.name for pool in program.worker_pools] == ["cpu", "io"]
    assert [queue.name for queue in pool_queues(program)] == ["cpu", "io", "cpu.dead"]
    assert transport_options(program, "redis")["visibility_timeout"] == 600
    [block] = program.parallel_blocks
    assert {step.worker_pool for step in block.steps} == {"cpu"}
    assert sorted(step.payload()["priority"] for step in block.steps) == [1, 4, 8]


def test_the_example_files_parse() -> None:
    for path in EXAMPLES.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict), path
