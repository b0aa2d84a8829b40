"""A block run inline (``engine.inline``) ends as the same block run on the conductor (``LocalExecutor``): the
same statuses, outcomes, errors, results and decisions, for every strategy and the ways a block ends."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from namel3ss_celery import cancelled
from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.engine.inline import InlineBlock, fits
from namel3ss_celery.errors import StepCancelled
from namel3ss_celery.local import LocalExecutor
from namel3ss_celery.registry import SHARED, Registry
from namel3ss_celery.results import ParallelExecutionResult
from namel3ss_celery.spec import ParallelBlockSpec, load_model

GAP = 0.02  # between two steps' ends: a hundred times either path's own cost per step

# Each step: (seconds it takes, what it does).
ALL_OK = [(1, "ok"), (2, "ok"), (3, "ok")]
ONE_FAILS = [(3, "ok"), (1, "fail"), (4, "ok")]
ALL_FAIL = [(1, "fail"), (2, "fail"), (3, "fail")]
ONE_HANGS = [(200, "ok"), (1, "ok"), (2, "fail")]
NOT_JSON = [(1, "ok"), (2, "object")]
HEEDS_CANCEL = [(200, "heed"), (1, "ok"), (2, "ok")]
WINDOWED = [(1, "ok"), (5, "ok"), (2, "fail"), (7, "ok"), (8, "ok"), (9, "ok")]  # no two end at once

SCRIPTS = {
    "all_ok": ALL_OK,
    "one_fails": ONE_FAILS,
    "all_fail": ALL_FAIL,
    "one_hangs": ONE_HANGS,
    "not_json": NOT_JSON,
    "heeds_cancel": HEEDS_CANCEL,
    "windowed": WINDOWED,
    "empty": [],
}
STRATEGIES = ["all", "collect", "map_reduce", "race", "any_success"]


async def play(script: list[tuple[int, str]], index: int) -> Any:
    ticks, kind = script[index]
    if kind == "heed":  # a long step that stops when its block no longer needs it
        for _ in range(ticks):
            if cancelled():
                raise StepCancelled("asked to stop")
            await asyncio.sleep(GAP)
        return index
    await asyncio.sleep(ticks * GAP)
    if kind == "fail":
        raise ValueError(f"step {index} broke")
    if kind == "object":
        return object()
    return index * 10


def block_of(strategy: str, script: list[tuple[int, str]], **fields: Any) -> ParallelBlockSpec:
    spec: dict[str, Any] = {
        "name": "b",
        "strategy": strategy,
        "steps": [{"target": "play", "i": i} for i in range(len(script))],
        **fields,
    }
    if strategy == "map_reduce":
        spec["reduce_function"] = "sum"
    return load_model(ParallelBlockSpec, spec)


def on_the_conductor(block: ParallelBlockSpec, script: list[tuple[int, str]]) -> ParallelExecutionResult:
    registry = Registry(parent=SHARED)

    async def step(step: dict[str, Any], context: dict[str, Any]) -> Any:
        return await play(script, step["i"])

    registry.add_step("play", step)
    result = LocalExecutor(registry).run_sync(make_plan(block), {"k": 1})
    assert isinstance(result, ParallelExecutionResult)
    return result


def inline(block: ParallelBlockSpec, script: list[tuple[int, str]]) -> ParallelExecutionResult:
    seen: list[dict[str, Any]] = []

    async def call(index: int, context: dict[str, Any]) -> Any:
        seen.append(context)
        return await play(script, index)

    worker = f"local@{socket.gethostname()}"
    run = InlineBlock(block, call, {"k": 1, "outputs": {}}, SHARED, worker=worker, executed_on="local", run_id="r")
    result = asyncio.run(run.run())
    assert all(c == {"k": 1, "outputs": {}} for c in seen)
    assert len({id(c) for c in seen}) == len(seen)  # each step a context of its own
    return result


def shape(result: ParallelExecutionResult) -> dict[str, Any]:
    """The result without its clock readings."""
    data = result.to_dict()
    for name in ("start_time", "end_time", "total_duration_ms", "actual_max_concurrent"):
        data.pop(name)
    data["metadata"] = {k: v for k, v in data["metadata"].items() if k != "loser_worker_seconds"}
    data["results"] = [
        {k: v for k, v in step.items() if k not in ("start_time", "end_time", "duration_ms")}
        for step in data["results"]
    ]
    if result.strategy == "collect":
        data["final_result"] = {
            key: {k: v for k, v in entry.items() if k != "duration_ms"} for key, entry in data["final_result"].items()
        }
    return data


CASES = [
    pytest.param(strategy, name, fields, id=f"{strategy}-{name}-{'-'.join(map(str, fields.values())) or 'plain'}")
    for strategy in STRATEGIES
    for name in SCRIPTS
    for fields in ({}, {"fail_fast": False}, {"max_concurrency": 2}, {"timeout_seconds": 0.6})
    if not ("fail_fast" in fields and strategy not in ("all", "map_reduce"))  # fail_fast is theirs alone
    if not (name == "one_hangs" and "timeout_seconds" not in fields and strategy not in ("race", "any_success"))
    and not (name == "heeds_cancel" and strategy not in ("race", "any_success"))
    and not (name == "empty" and strategy == "map_reduce")  # refused by the spec on both paths
]


@pytest.mark.parametrize(("strategy", "name", "fields"), CASES)
def test_a_block_run_inline_ends_as_on_the_conductor(strategy: str, name: str, fields: dict[str, Any]) -> None:
    script = SCRIPTS[name]
    block = block_of(strategy, script, **fields)
    assert fits(block)
    assert shape(inline(block, script)) == shape(on_the_conductor(block, script))


def test_what_needs_the_conductor_does_not_fit() -> None:
    assert not fits(block_of("all", ALL_OK, retry_failed=True))
    timed = load_model(ParallelBlockSpec, {"name": "b", "steps": [{"target": "play", "timeout_seconds": 1}]})
    assert not fits(timed)
    pooled = load_model(ParallelBlockSpec, {"name": "b", "steps": [{"target": "play", "worker_pool": "p"}]})
    assert not fits(pooled)


def test_a_fault_of_the_settle_is_raised_never_a_hang() -> None:
    block = block_of("map_reduce", ALL_OK)
    broken = Registry(parent=SHARED)

    async def call(index: int, context: dict[str, Any]) -> Any:
        return {1, 2}  # not JSON: the step fails, and the reducer is never reached

    run = InlineBlock(block, call, {}, broken, worker="w", executed_on="local", run_id="r")
    result = asyncio.run(asyncio.wait_for(run.run(), 5))
    assert result.overall_status == "failed"
    assert "JSON" in (result.results[0].error or "")


def test_a_reducers_value_is_given_back_as_the_store_gives_it_on_the_conductor() -> None:
    registry = Registry(parent=SHARED)
    registry.add_reducer("pair", lambda values: (min(values), max(values)))
    block = load_model(
        ParallelBlockSpec,
        {"name": "b", "strategy": "map_reduce", "reduce_function": "pair", "steps": [{"target": "play", "i": 0}]},
    )

    async def call(index: int, context: dict[str, Any]) -> Any:
        return 5

    run = InlineBlock(block, call, {}, registry, worker="w", executed_on="local", run_id="r")
    assert asyncio.run(run.run()).final_result == [5, 5]
