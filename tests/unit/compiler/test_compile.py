"""compile_node: the canvas of each strategy, built without a broker or a worker (nothing is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celery
import pytest
from celery import canvas

from namel3ss_celery import compiler
from namel3ss_celery.compiler import compile_node
from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.plan.message import SCHEMA_VERSION
from namel3ss_celery.plan.model import PlanNode, PoolRoute
from namel3ss_celery.routing.queues import adapter_queue
from namel3ss_celery.spec import ParallelBlockSpec, load_program

STEPS = [{"name": "first", "target": "fetch", "query": "celery"}, {"target": "mod:func", "kind": "llm"}]


@pytest.fixture(autouse=True)
def chords_for_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests use two-step blocks; build them as large blocks are built (small ones are counted)."""
    monkeypatch.setattr(compiler, "SMALL_BLOCK", 0)


@pytest.fixture
def app() -> Iterator[celery.Celery]:
    """An app with a Redis result backend (nothing connects: no signature is sent)."""
    app = celery.Celery("t", broker="memory://", backend="redis://127.0.0.1:1/0", set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def memory_app() -> Iterator[celery.Celery]:
    app = celery.Celery("m", broker="memory://", backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize(("strategy", "fields"), [("all", {}), ("map_reduce", {"reduce_function": "sum"})])
def test_without_a_native_chord_backend_all_and_map_reduce_use_the_counted_join(
    memory_app: celery.Celery, strategy: str, fields: dict[str, Any]
) -> None:
    sig = compile_node(memory_app, node(strategy, **fields), "run-1", {}).canvas
    assert isinstance(sig, canvas.group)
    assert {task.args[0]["join"] for task in sig.tasks} == {"count"}


def node(strategy: str, **fields: Any) -> PlanNode:
    return make_plan(ParallelBlockSpec(name="blk", strategy=strategy, steps=STEPS, **fields)).nodes[0]


@pytest.mark.parametrize(("strategy", "fields"), [("all", {}), ("map_reduce", {"reduce_function": "sum"})])
def test_all_and_map_reduce_are_a_chord_with_a_settle_body(
    app: celery.Celery, strategy: str, fields: dict[str, Any]
) -> None:
    sig = compile_node(app, node(strategy, **fields), "run-1", {"user": "ada"}).canvas
    assert isinstance(sig, canvas._chord)
    assert [task.task for task in sig.tasks] == ["n3.step.fetch", "n3.step.mod:func"]
    body = sig.body
    assert body.task == "n3.settle.chord"
    assert tuple(body.args) == ("run-1", "blk")
    assert body.immutable is True
    errbacks = body.options["link_error"]
    assert [(e.task, e.kwargs) for e in errbacks] == [("n3.settle.chord_failed", {"run_id": "run-1", "node": "blk"})]


def test_collect_is_a_group_of_steps(app: celery.Celery) -> None:
    sig = compile_node(app, node("collect"), "run-1", {}).canvas
    assert type(sig) is canvas.group
    assert [task.task for task in sig.tasks] == ["n3.step.fetch", "n3.step.mod:func"]
    assert all(task.args[0]["join"] == "count" for task in sig.tasks)


@pytest.mark.parametrize(("strategy", "join"), [("all", "chord"), ("collect", "count"), ("map_reduce", "chord")])
def test_each_step_carries_a_versioned_payload(app: celery.Celery, strategy: str, join: str) -> None:
    fields = {"reduce_function": "concat"} if strategy == "map_reduce" else {}
    sig = compile_node(app, node(strategy, **fields), "run-1", {"user": "ada", "outputs": {"fetch": [1]}}).canvas
    payloads = [task.args[0] for task in sig.tasks]
    assert all(task.immutable and len(task.args) == 1 and not task.kwargs for task in sig.tasks)
    assert payloads == [
        {
            "v": SCHEMA_VERSION,
            "run": "run-1",
            "node": "blk",
            "i": 0,
            "n": 2,
            "key": "first",
            "join": join,
            "strategy": strategy,
            "fail_fast": True,
            "retries": 0,
            "feed": False,
            "deadline": None,
            "step": {"name": "first", "target": "fetch", "kind": "tool", "query": "celery"},
            "context": {"user": "ada", "outputs": {"fetch": [1]}},
        },
        {
            "v": SCHEMA_VERSION,
            "run": "run-1",
            "node": "blk",
            "i": 1,
            "n": 2,
            "key": "step_1",
            "join": join,
            "strategy": strategy,
            "fail_fast": True,
            "retries": 0,
            "feed": False,
            "deadline": None,
            "step": {"target": "mod:func", "kind": "llm"},
            "context": {"user": "ada", "outputs": {"fetch": [1]}},
        },
    ]
    assert SCHEMA_VERSION == 1


def test_signatures_are_bound_to_the_given_app(app: celery.Celery) -> None:
    sig = compile_node(app, node("all"), "run-1", {}).canvas
    assert all(task.app is app for task in sig.tasks)
    assert sig.body.app is app


def test_a_workflow_step_node_compiles_to_its_one_step(app: celery.Celery) -> None:
    plan = make_plan(
        load_program({"workflows": [{"name": "w", "steps": [{"name": "fetch", "target": "fetch_sources", "q": 1}]}]})
    )
    sig = compile_node(app, plan.nodes[0], "run-2", {}).canvas
    assert isinstance(sig, canvas._chord)
    [task] = sig.tasks
    assert task.task == "n3.step.fetch_sources"
    assert task.args[0]["key"] == "fetch"
    assert task.args[0]["step"] == {"name": "fetch", "target": "fetch_sources", "kind": "tool", "q": 1}
    assert sig.body.args == ("run-2", "fetch")


def test_a_small_all_block_uses_the_counted_join(app: celery.Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "SMALL_BLOCK", 8)
    sig = compile_node(app, node("all"), "run-1", {}).canvas
    assert isinstance(sig, canvas.group)
    assert {task.args[0]["join"] for task in sig.tasks} == {"count"}


def pooled(*pools: str | None) -> ParallelBlockSpec:
    return ParallelBlockSpec(name="blk", steps=[{"target": "fetch", "worker_pool": pool} for pool in pools])


ROUTES = {
    "gpu": PoolRoute(queue="gpu-q"),
    "cpu": PoolRoute(queue="cpu-q"),
    "edge": PoolRoute(queue="edge-q", fallback_to_local=True),
}


@pytest.mark.parametrize(
    ("pools", "queue"),
    [
        (("gpu", "gpu"), "gpu-q"),
        (("cpu", "gpu"), "cpu-q"),  # every step has a pool: the first step's
        (("gpu", None), None),  # a step on the default queue: someone consumes it
        (("edge", "edge"), None),  # fallback_to_local: its queue may have no worker at all
        ((), None),
    ],
)
def test_the_adapters_tasks_follow_steps_that_all_name_a_pool(pools: tuple[str | None, ...], queue: str | None) -> None:
    assert adapter_queue(pooled(*pools), ROUTES) == queue


def test_a_chord_of_pool_steps_has_its_body_and_errback_on_the_pools_queue(app: celery.Celery) -> None:
    plan_node = PlanNode("blk", pooled("gpu", "gpu"))
    sig = compile_node(app, plan_node, "run-1", {}, ROUTES).canvas
    assert isinstance(sig, canvas._chord)
    assert sig.body.options["queue"] == "gpu-q"
    assert [e.options["queue"] for e in sig.body.options["link_error"]] == ["gpu-q"]
    default = compile_node(app, PlanNode("blk", pooled("gpu", None)), "run-1", {}, ROUTES).canvas
    assert "queue" not in default.body.options


def test_a_stored_context_travels_as_its_reference() -> None:
    from namel3ss_celery.compiler.steps import step_message
    from namel3ss_celery.plan.kinds import Join
    from namel3ss_celery.plan.message import StoredContext
    from namel3ss_celery.spec import ParallelBlockSpec

    block = ParallelBlockSpec.model_validate({"name": "b", "steps": [{"target": "t"}]})
    message = step_message(block, 0, run_id="r", node="b", context=StoredContext("b"), join=Join.COUNT)
    assert message.context_ref == "b"
    assert message.encode()["context"] == {} and message.encode()["v"] == 2
