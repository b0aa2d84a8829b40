"""The catalogue of bad input: each is refused before anything is recorded or published, naming its field.

Every case goes through the user's own entry point (``n3.dispatch``, ``n3.publish``,
``LocalExecutor.run``, the runtime API, ``run.get``) on the embedded default, with
no broker: the error is the documented class (``SpecError`` with ``.path``,
``InvalidArgument`` with ``.argument``, ``CompileError``), its message names the
field, and the coordination store holds no run afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery
from namel3ss_celery.errors import CompileError, InvalidArgument, SpecError, UnknownTarget
from namel3ss_celery.local import LocalExecutor
from namel3ss_celery.runs import RunHandle
from namel3ss_celery.runtime import execute_parallel_steps
from namel3ss_celery.settings import Settings
from namel3ss_celery.spec import ParallelBlockSpec, load_any, load_model, load_program
from namel3ss_celery.spec.limits import MAX_DURATION_SECONDS, MAX_NESTING, nested_too_deep

pytestmark = pytest.mark.timeout(30)

FILE = "<file>"  # stands for the path of the case's program file


def nested(levels: int, kind: type = dict) -> Any:
    """A value ``levels`` containers deep, built without recursion."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value} if kind is dict else [value]
    return value


def block(**fields: Any) -> dict[str, Any]:
    return {"name": "b", "steps": [{"target": "echo"}], **fields}


def step(**fields: Any) -> dict[str, Any]:
    return {"name": "b", "steps": [{"target": "echo", **fields}]}


def program_block(**fields: Any) -> dict[str, Any]:
    return {"parallel_blocks": [block(**fields)]}


def pool(**fields: Any) -> dict[str, Any]:
    return {"parallel_blocks": [block()], "worker_pools": [{"name": "p", "queue_name": "p", **fields}]}


def queue(**fields: Any) -> dict[str, Any]:
    return {"parallel_blocks": [block()], "task_queues": [{"name": "q", **fields}]}


def workflow(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"workflows": [{"name": "w", "steps": list(nodes)}]}


def step_node(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "target": "echo", **fields}


def trigger(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "event_type": "e", "trigger_target": "b", **fields}


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)

Call = Callable[[Namel3ssCelery, str], object]


def dispatch(spec: Any, context: Any = None, **kwargs: Any) -> Call:
    return lambda n3, _file: n3.dispatch(spec, context=context, **kwargs)


def dispatch_file(text: str | bytes) -> Call:
    def call(n3: Namel3ssCelery, file: str) -> object:
        data = text.encode() if isinstance(text, str) else text
        Path(file).write_bytes(data)
        return n3.dispatch(file)

    return call


def publish(context: Any) -> Call:
    return lambda n3, _file: n3.publish(n3.plan(block()), context)


def run_locally(context: Any) -> Call:
    return lambda n3, _file: LocalExecutor(n3.registry).run_sync(n3.plan(block()), context)


def runtime_api(context: Any) -> Call:
    async def executor(step: dict[str, Any], context: dict[str, Any]) -> int:
        return 1

    return lambda n3, _file: asyncio.run(execute_parallel_steps([{"x": 1}], executor, context=context))


def get(timeout: Any) -> Call:
    return lambda n3, _file: RunHandle(lambda: n3.store, n3.conductor.cancel, "no-such-run").get(timeout=timeout)


def aget(timeout: Any) -> Call:
    handle = lambda n3: RunHandle(lambda: n3.store, n3.conductor.cancel, "no-such-run")  # noqa: E731
    return lambda n3, _file: asyncio.run(handle(n3).aget(timeout=timeout))


@dataclass(frozen=True)
class Bad:
    """One bad input: how it is given, the error it must raise, where that error points, and what it says."""

    id: str
    call: Call
    error: type[Exception]
    where: str  # SpecError/CompileError: .path; InvalidArgument: .argument
    says: str = ""  # also in the message, besides ``where``
    limit: tuple[str, int] | None = None  # a module constant lowered for the case: (module.NAME, value)


CATALOGUE = [
    # --- the context is not a mapping (item 1) --------------------------------------------------------
    Bad("dispatch-context-list", dispatch(block(), [1, 2, 3]), SpecError, "context", "not list"),
    Bad("dispatch-context-str", dispatch(block(), "abc"), SpecError, "context", "not str"),
    Bad("dispatch-context-int", dispatch(block(), 5), SpecError, "context", "not int"),
    Bad("publish-context-list", publish([1, 2, 3]), SpecError, "context", "not list"),
    Bad("local-context-str", run_locally("abc"), SpecError, "context", "not str"),
    Bad("local-context-int", run_locally(5), SpecError, "context", "not int"),
    Bad("runtime-context-list", runtime_api([1, 2]), SpecError, "context", "not list"),
    Bad("dispatch-outputs-list", dispatch(block(), {"outputs": [1]}), SpecError, "context.outputs", "not list"),
    Bad("publish-outputs-none", publish({"outputs": None}), SpecError, "context.outputs", "not NoneType"),
    Bad("local-outputs-int", run_locally({"outputs": 5}), SpecError, "context.outputs", "not int"),
    Bad("workflow-outputs-str", dispatch(workflow(step_node("a")), {"outputs": "x"}), SpecError, "context.outputs"),
    Bad("dispatch-context-object", dispatch(block(), {"x": object()}), SpecError, "context", "JSON cannot carry"),
    Bad("dispatch-context-nan", dispatch(block(), {"x": float("nan")}), SpecError, "context", "JSON cannot carry"),
    # --- ':' in block and node names (item 2) ---------------------------------------------------------
    Bad("block-name-colon", dispatch(block(name="b:1")), SpecError, "name", "':'"),
    Bad("program-block-colon", dispatch(program_block(name="a:b")), SpecError, "parallel_blocks[0].name", "':'"),
    Bad(
        "node-name-colon",
        dispatch(workflow(step_node("a"), step_node("a:started:1", depends_on=["a"]))),
        SpecError,
        "workflows[0].steps[1].name",
        "':'",
    ),
    # --- nesting (item 3) ----------------------------------------------------------------------------------
    Bad("payload-1000-dicts", dispatch(step(p=nested(1000))), SpecError, "steps[0].p", "MAX_NESTING"),
    Bad("payload-1000-lists", dispatch(step(p=nested(1000, list))), SpecError, "steps[0].p", "MAX_NESTING"),
    Bad("payload-101", dispatch(step(p=nested(MAX_NESTING + 1))), SpecError, "steps[0].p", "levels deep"),
    Bad(
        "program-payload",
        dispatch({"parallel_blocks": [step(p=nested(1000))]}),
        SpecError,
        "parallel_blocks[0].steps[0].p",
        "levels deep",
    ),
    Bad(
        "node-payload",
        dispatch(workflow(step_node("a", p=nested(1000)))),
        SpecError,
        "workflows[0].steps[0].p",
        "levels deep",
    ),
    Bad("metadata", dispatch(program_block(metadata=nested(1000))), SpecError, "parallel_blocks[0].metadata"),
    Bad("worker-config", dispatch(pool(worker_config=nested(1000))), SpecError, "worker_pools[0].worker_config"),
    Bad("context-1000", dispatch(block(), {"a": nested(1000)}), SpecError, "context.a", "MAX_NESTING"),
    Bad("context-cycle", dispatch(block(), cyclic()), SpecError, "context.self", "levels deep"),
    Bad("local-context-1000", run_locally({"a": nested(1000, list)}), SpecError, "context.a", "levels deep"),
    Bad("yaml-2000-deep", dispatch_file("x: " + "[" * 2000 + "]" * 2000), SpecError, FILE, "MAX_YAML_DEPTH"),
    Bad("json-100000-deep", dispatch_file('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"), SpecError, FILE),
    # --- durations that cannot become a deadline (item 4) -------------------------------------------------
    Bad("block-timeout", dispatch(block(timeout_seconds=1e308)), SpecError, "timeout_seconds", "MAX_DURATION"),
    Bad("step-timeout-inf", dispatch(step(timeout_seconds=float("inf"))), SpecError, "steps[0].timeout_seconds"),
    Bad("block-timeout-nan", dispatch(block(timeout_seconds=float("nan"))), SpecError, "timeout_seconds"),
    Bad(
        "block-timeout-31-days",
        dispatch(program_block(timeout_seconds=31 * 86400)),
        SpecError,
        "parallel_blocks[0].timeout_seconds",
        "30 days",
    ),
    Bad("pool-timeout", dispatch(pool(timeout_seconds=1e308)), SpecError, "worker_pools[0].timeout_seconds"),
    Bad(
        "max-wait",
        dispatch({**pool(), "distributed_configs": [{"worker_pool": "p", "max_wait_seconds": 1e308}]}),
        SpecError,
        "distributed_configs[0].max_wait_seconds",
    ),
    Bad("retention", dispatch(queue(message_retention=1e308)), SpecError, "task_queues[0].message_retention"),
    Bad("initial-delay", dispatch(queue(initial_retry_delay=1e308)), SpecError, "task_queues[0].initial_retry_delay"),
    Bad("max-delay", dispatch(queue(max_retry_delay=float("inf"))), SpecError, "task_queues[0].max_retry_delay"),
    Bad("visibility", dispatch(queue(visibility_timeout=1e308)), SpecError, "task_queues[0].visibility_timeout"),
    Bad(
        "trigger-delay",
        dispatch({**program_block(), "event_triggers": [trigger(trigger_delay=1e308)]}),
        SpecError,
        "event_triggers[0].trigger_delay",
    ),
    # --- a workflow with no nodes (item 5) ----------------------------------------------------------------
    Bad("no-steps", dispatch({"name": "w", "steps": []}), SpecError, "steps", "no steps"),
    Bad("steps-missing", dispatch({"name": "w"}), SpecError, "steps", "no steps"),
    Bad("workflow-no-nodes", dispatch({"name": "w", "description": "d", "steps": []}), SpecError, "steps"),
    Bad("program-workflow-no-nodes", dispatch(workflow()), SpecError, "workflows[0].steps", "at least 1"),
    # --- workflow= where there is no workflow to choose (item 6) ------------------------------------------
    Bad("workflow-for-block", dispatch(block(), workflow="w"), SpecError, "workflow", "ParallelBlockSpec"),
    Bad(
        "workflow-for-workflow", dispatch(workflow(step_node("a"))["workflows"][0], workflow="w"), SpecError, "workflow"
    ),
    Bad(
        "workflow-for-blocks-only", dispatch(program_block(), workflow="w"), SpecError, "workflow", "without workflows"
    ),
    Bad("unknown-workflow", dispatch(workflow(step_node("a")), workflow="nope"), SpecError, "workflows", "'nope'"),
    # --- pools (item 7) -----------------------------------------------------------------------------------------
    Bad(
        "min-above-max",
        dispatch(pool(min_workers=5, max_workers=2)),
        SpecError,
        "worker_pools[0].min_workers",
        "max_workers",
    ),
    Bad(
        "min-above-default-max",
        dispatch(pool(min_workers=20)),
        SpecError,
        "worker_pools[0].min_workers",
        "max_workers (10)",
    ),
    # --- run.get's timeout (item 8) ----------------------------------------------------------------------------
    Bad("get-none", get(None), InvalidArgument, "timeout", "every wait has a bound"),
    Bad("get-str", get("2"), InvalidArgument, "timeout", "not str"),
    Bad("get-negative", get(-1), InvalidArgument, "timeout", "not -1"),
    Bad("get-nan", get(float("nan")), InvalidArgument, "timeout", "not nan"),
    Bad("get-inf", get(float("inf")), InvalidArgument, "timeout", "not inf"),
    Bad("get-bool", get(True), InvalidArgument, "timeout", "not bool"),
    Bad("get-too-long", get(MAX_DURATION_SECONDS + 1), InvalidArgument, "timeout", "MAX_DURATION_SECONDS"),
    Bad("aget-none", aget(None), InvalidArgument, "timeout", "every wait has a bound"),
    # --- resource limits (item 9) -------------------------------------------------------------------------------
    Bad("billion-laughs", dispatch_file(BILLION_LAUGHS), SpecError, FILE, "MAX_YAML_NODES"),
    Bad("recursive-alias", dispatch_file("a: &a [1, *a]\n"), SpecError, FILE, "recursive"),
    Bad(
        "file-too-big",
        dispatch_file("parallel_blocks: []\n" + "#" * 2000),
        SpecError,
        FILE,
        "MAX_PROGRAM_BYTES",
        limit=("namel3ss_celery.spec.load.MAX_PROGRAM_BYTES", 1000),
    ),
    Bad("not-utf8", dispatch_file(b"name: \xff\xfe\n"), SpecError, FILE, "UTF-8"),
    Bad(
        "plan-too-big",
        dispatch(step(text="x" * 3000)),
        SpecError,
        "plan",
        "MAX_PLAN_BYTES",
        limit=("namel3ss_celery.compiler.planning.MAX_PLAN_BYTES", 2000),
    ),
    # --- refused before this catalogue, and still refused so ---------------------------------------------------
    Bad("unknown-strategy", dispatch(block(strategy="fastest")), SpecError, "strategy", "'any_success'"),
    Bad("unknown-key", dispatch(block(bogus=1)), SpecError, "bogus", "unknown key"),
    Bad("unknown-program-key", dispatch({**program_block(), "workflowz": []}), SpecError, "workflowz", "unknown key"),
    Bad("unknown-target", dispatch(step(target="nowhere")), UnknownTarget, "block[b].steps[0]", "'nowhere'"),
    Bad("priority-10", dispatch(step(priority=10)), SpecError, "steps[0].priority"),
    Bad("priority-negative", dispatch(step(priority=-1)), SpecError, "steps[0].priority"),
    Bad("max-concurrency-negative", dispatch(block(max_concurrency=-1)), SpecError, "max_concurrency"),
    Bad("step-timeout-negative", dispatch(step(timeout_seconds=-1)), SpecError, "steps[0].timeout_seconds"),
    Bad(
        "map-reduce-without-reducer",
        dispatch(program_block(strategy="map_reduce")),
        SpecError,
        "parallel_blocks[0]",
        "reduce_function",
    ),
    Bad(
        "unknown-reducer",
        dispatch(block(strategy="map_reduce", reduce_function="nope")),
        CompileError,
        "block[b].reduce_function",
        "nope",
    ),
    Bad(
        "duplicate-step-names",
        dispatch({"name": "b", "steps": [{"name": "s", "target": "echo"}] * 2}),
        SpecError,
        "steps",
        "two steps are named 's'",
    ),
    Bad(
        "fan-out-batch-zero",
        dispatch(
            {"name": "b", "strategy": "collect", "fan_out": {"target": "echo", "split_by": "xs", "batch_size": 0}}
        ),
        SpecError,
        "fan_out.batch_size",
    ),
    Bad(
        "node-target-and-block",
        dispatch(workflow(step_node("a", block="b"))),
        SpecError,
        "workflows[0].steps[0]",
        "exactly one",
    ),
    Bad("queue-type", dispatch(queue(queue_type="kafka")), SpecError, "task_queues[0].queue_type", "'rabbitmq'"),
    Bad("queue-retries-negative", dispatch(queue(max_retries=-1)), SpecError, "task_queues[0].max_retries"),
    Bad("pool-without-queue", dispatch({"worker_pools": [{"name": "p"}]}), SpecError, "worker_pools[0].queue_name"),
    Bad("file-missing", lambda n3, file: n3.dispatch(file), SpecError, FILE, "cannot read"),
    Bad("yaml-top-list", dispatch_file("- 1\n- 2\n"), SpecError, FILE, "not list"),
]


@pytest.fixture(scope="module")
def n3() -> Iterator[Namel3ssCelery]:
    embedded = Namel3ssCelery(settings=Settings())

    @embedded.step("echo")
    def echo(step: dict[str, Any], context: dict[str, Any]) -> Any:
        return step.get("value")

    yield embedded
    embedded.close()


@pytest.fixture
def recorded(n3: Namel3ssCelery, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the runs whose record was created during the test."""
    created: list[str] = []
    create_run = n3.store.create_run

    def spy(run_id: str, *args: Any, **kwargs: Any) -> bool:
        created.append(run_id)
        return create_run(run_id, *args, **kwargs)

    monkeypatch.setattr(n3.store, "create_run", spy)
    return created


def test_the_catalogue_holds_at_least_forty_bad_inputs() -> None:
    ids = [case.id for case in CATALOGUE]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.id for case in CATALOGUE])
def test_bad_input_is_refused_naming_its_field_and_records_nothing(
    case: Bad, n3: Namel3ssCelery, recorded: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = str(tmp_path / "program.yaml")
    if case.limit is not None:
        monkeypatch.setattr(case.limit[0], case.limit[1])
    with pytest.raises(case.error) as info:
        case.call(n3, file)
    error = info.value
    where = file if case.where == FILE else case.where
    found = error.argument if isinstance(error, InvalidArgument) else getattr(error, "path", None)
    assert found == where
    assert where in str(error)
    assert case.says in str(error)
    assert recorded == []
    assert n3.embedded_worker is not None and not n3.embedded_worker.running


# --- what the bounds still let through ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        step(p=nested(MAX_NESTING)),
        step(p=nested(MAX_NESTING, list)),
        block(timeout_seconds=MAX_DURATION_SECONDS),
        step(timeout_seconds=MAX_DURATION_SECONDS),
        {"name": "b", "steps": [{"name": "a:b", "target": "echo"}]},  # a step name is no record field
        {"name": "b", "strategy": "collect", "fan_out": {"target": "echo", "split_by": "xs"}},
    ],
)
def test_specs_within_the_bounds_load(spec: dict[str, Any]) -> None:
    assert isinstance(load_any(spec), ParallelBlockSpec)


def test_a_context_within_the_bounds_is_accepted(n3: Namel3ssCelery) -> None:
    plan = n3.plan(block())
    shared = [1, 2]
    context = {"a": nested(MAX_NESTING), "outputs": {"earlier": 1}, "twice": [shared, shared]}
    result = LocalExecutor(n3.registry).run_sync(plan, context)
    assert result.overall_status == "completed"


@pytest.mark.parametrize("timeout", [0, 0.5, 2, MAX_DURATION_SECONDS])
def test_a_bounded_timeout_is_accepted(n3: Namel3ssCelery, timeout: float) -> None:
    from namel3ss_celery.runs import check_timeout

    check_timeout(timeout)


def test_a_long_chain_of_nodes_loads_without_recursion() -> None:
    count = 3000
    nodes = [step_node(f"n{i}", depends_on=[f"n{i - 1}"] if i else []) for i in range(count)]
    program = load_program(workflow(*reversed(nodes)))
    assert len(program.workflows[0].steps) == count


def test_yaml_aliases_within_the_bounds_load(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "defaults: &d {target: echo, tries: 2}\n"
        "parallel_blocks:\n"
        "  - name: b\n"
        "    steps: [{<<: *d, name: one}, {<<: *d, name: two}]\n"
        "    metadata: {copy: *d}\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError, match="unknown key") as info:  # the shared anchor is no program key
        load_program(path)
    assert info.value.path == "defaults"
    path.write_text(path.read_text().replace("defaults:", "metadata:"), encoding="utf-8")
    program = load_program(path)
    assert [s.payload()["tries"] for s in program.parallel_blocks[0].steps] == [2, 2]


def test_a_file_at_the_byte_limit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps({"parallel_blocks": []})
    monkeypatch.setattr("namel3ss_celery.spec.load.MAX_PROGRAM_BYTES", len(text))
    path = tmp_path / "p.json"
    path.write_text(text, encoding="utf-8")
    assert load_program(path).parallel_blocks == []


def test_nested_too_deep_costs_no_recursion_and_walks_shared_values_once() -> None:
    assert nested_too_deep(nested(1_000_000))
    assert not nested_too_deep(nested(MAX_NESTING))
    bomb: Any = ["lol"] * 9
    for _ in range(50):  # 9**50 values if every shared list were walked as a copy
        bomb = [bomb] * 9
    assert not nested_too_deep(bomb)


def test_a_fan_out_item_nested_too_deep_fails_the_block_not_the_run() -> None:
    from namel3ss_celery.spec import expand_fan_out

    spec = load_model(
        ParallelBlockSpec, {"name": "b", "strategy": "collect", "fan_out": {"target": "echo", "split_by": "xs"}}
    )
    with pytest.raises(SpecError, match="levels deep") as info:
        expand_fan_out(spec, {"xs": [1, nested(MAX_NESTING + 1)]})
    assert info.value.path == "fan_out.split_by"
