"""The local executor gives what Celery gives: every example and strategy, run both ways and compared.

Celery runs on real worker processes on Redis; ``LocalExecutor`` runs the same
plan in this process. Everything but timing and where it ran must be equal.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery, ParallelExecutionResult, Settings, WorkflowResult
from namel3ss_celery.local import LocalExecutor

from .conftest import Cluster
from .workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60
EXAMPLES = REPO / "examples"

# Fields that depend on the clock or on where a step ran; every other field must match.
TIMING = frozenset(
    {
        "run_id",
        "start_time",
        "end_time",
        "duration_ms",
        "total_duration_ms",
        "actual_max_concurrent",
        "loser_worker_seconds",
    }
)
WHERE = frozenset({"executed_on", "worker", "celery_task_id"})

Result = ParallelExecutionResult | WorkflowResult


def comparable(value: Any) -> Any:
    """A result's ``to_dict()`` without timing and placement, however deep (collect entries carry a duration)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in TIMING | WHERE}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def blocks_of(result: Result) -> list[ParallelExecutionResult]:
    return list(result.blocks.values()) if isinstance(result, WorkflowResult) else [result]


def where(result: Result) -> set[str]:
    """Every ``executed_on`` the result reports: each block's and each step's."""
    return {b.metadata["executed_on"] for b in blocks_of(result)} | {
        r.metadata["executed_on"] for b in blocks_of(result) for r in b.results
    }


@dataclass(frozen=True)
class Both:
    celery: Result
    local: Result


def run_both(n3: Namel3ssCelery, spec: Any, context: dict[str, Any] | None = None, local_spec: Any = None) -> Both:
    """The same spec through Celery (dispatch on the real worker) and through ``LocalExecutor``."""
    celery = n3.dispatch(spec, context).get(timeout=WAIT)
    executor = LocalExecutor(n3.registry, step_modules=n3.settings.step_modules)
    local = executor.run_sync(n3.plan(local_spec if local_spec is not None else spec), context)
    return Both(celery, local)


def assert_conforms(both: Both) -> None:
    celery, local = both.celery, both.local
    assert type(local) is type(celery)
    assert local.overall_status == celery.overall_status
    assert comparable(local.final_result) == comparable(celery.final_result)
    if isinstance(celery, WorkflowResult):
        assert isinstance(local, WorkflowResult)
        assert comparable(local.outputs) == comparable(celery.outputs)
        assert (local.failed_node, local.error_message) == (celery.failed_node, celery.error_message)
        assert list(local.blocks) == list(celery.blocks)
    for mine, theirs in zip(blocks_of(local), blocks_of(celery), strict=True):
        counts = ("completed_tasks", "failed_tasks", "cancelled_tasks", "total_tasks")
        assert [getattr(mine, c) for c in counts] == [getattr(theirs, c) for c in counts]
        assert [(r.task_id, r.status, comparable(r.result), r.error) for r in mine.results] == [
            (r.task_id, r.status, comparable(r.result), r.error) for r in theirs.results
        ]
        assert mine.error_message == theirs.error_message
    assert comparable(local.to_dict()) == comparable(celery.to_dict())
    # A workflow lists only its block nodes; one whose nodes are all single steps reports no placement.
    expected = set() if isinstance(celery, WorkflowResult) and not celery.blocks else {"celery"}
    assert (where(celery), where(local)) == (expected, {"local"} if expected else set())


# --- the examples, on a worker of the default app that loads examples.steps --------------------------


@pytest.fixture(scope="module")
def examples_n3(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namel3ssCelery]:
    """``celery -A namel3ss_celery worker`` with ``NAMEL3SS_CELERY_STEP_MODULES=examples.steps``, and its n3."""
    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "examples.steps",
    }
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path_factory.mktemp("examples-worker"))
    try:
        worker.wait_ready(n3.app)
        yield n3
    finally:
        worker.stop()
        gc.collect()
        n3.close()
        n3.app.close()
        n3.app.backend.client.close()


@pytest.mark.parametrize("example", ["pipeline.yaml", "research.yaml"])
def test_each_example_program_conforms(examples_n3: Namel3ssCelery, example: str) -> None:
    both = run_both(examples_n3, EXAMPLES / example, {"requested_by": "conformance"})
    assert both.celery.overall_status == "completed"
    assert_conforms(both)


def test_the_examples_cover_every_node(examples_n3: Namel3ssCelery) -> None:
    both = run_both(examples_n3, EXAMPLES / "pipeline.yaml")
    assert isinstance(both.local, WorkflowResult)
    assert list(both.local.outputs) == ["search", "total_words", "longest_keyword", "checks"]
    assert both.local.final_result["kafka"]["error"] == "LookupError: no document named 'kafka'"


# --- every strategy, on the redis_cluster worker (tests.integration.steps) ---------------------------


def block(strategy: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": f"{strategy}_block", "strategy": strategy, "steps": steps, **extra}


MIXED_OK = [
    {"name": "a", "target": "echo", "value": "x"},
    {"name": "b", "target": "async_double", "value": 21},
    {"name": "c", "target": "tests.integration.steps:add_one", "value": 1},
]
MIXED_FAILING = [
    {"name": "ok", "target": "echo", "value": 1},
    {"name": "bad", "target": "fail", "message": "bad input"},
    {"name": "worse", "target": "async_fail"},
    {"name": "odd", "target": "not_json"},
]
NUMBERS = [{"target": "echo", "value": v} for v in (1, 2, 3)] + [{"target": "async_double", "value": 4}]
WAITS = dict(fail_fast=False)  # every step reports before the block settles: the whole result is deterministic

# Blocks and runs whose every field but timing and placement is the same both ways.
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "all": (block("all", MIXED_OK), "completed"),
    "all-failing": (block("all", MIXED_FAILING, **WAITS), "failed"),
    "collect": (block("collect", MIXED_OK), "completed"),
    "collect-failing": (block("collect", MIXED_FAILING), "completed"),
    "map_reduce-sum": (block("map_reduce", NUMBERS, reduce_function="sum"), "completed"),
    "map_reduce-registered": (block("map_reduce", NUMBERS, reduce_function="product"), "completed"),
    "map_reduce-no-steps": (block("map_reduce", [], reduce_function="concat"), "completed"),
    "map_reduce-failing-step": (
        block("map_reduce", [*NUMBERS, {"name": "bad", "target": "fail"}], reduce_function="sum", **WAITS),
        "failed",
    ),
    "map_reduce-failing-reducer": (
        block(
            "map_reduce", [{"target": "echo", "value": 1}, {"target": "echo", "value": "a"}], reduce_function="concat"
        ),
        "failed",
    ),
    "any_success-every-step-fails": (
        block("any_success", [{"name": "a", "target": "fail"}, {"target": "async_fail"}]),
        "failed",
    ),
    "max_concurrency": (block("collect", MIXED_FAILING, max_concurrency=2), "completed"),
    "max_concurrency-fail_fast": (block("all", MIXED_FAILING[1:] + MIXED_OK, max_concurrency=1), "failed"),
    "program": (
        {
            "parallel_blocks": [
                {"name": "first", "steps": MIXED_OK},
                {"name": "left", "strategy": "collect", "depends_on": ["first"], "steps": MIXED_FAILING},
                {
                    "name": "right",
                    "strategy": "map_reduce",
                    "reduce_function": "sum",
                    "depends_on": ["first"],
                    "steps": NUMBERS,
                },
                {
                    "name": "last",
                    "depends_on": ["left", "right"],
                    "steps": [{"name": "seen", "target": "context_value", "key": "outputs"}],
                },
            ]
        },
        "completed",
    ),
    "program-first-block-fails": (
        {
            "parallel_blocks": [
                {"name": "first", "steps": MIXED_FAILING, **WAITS},
                {"name": "second", "depends_on": ["first"], "steps": MIXED_OK},
            ]
        },
        "failed",
    ),
    "workflow": (
        {
            "parallel_blocks": [{"name": "batch", "strategy": "collect", "steps": MIXED_FAILING}],
            "workflows": [
                {
                    "name": "wf",
                    "steps": [
                        {"name": "who", "target": "context_value", "key": "user"},
                        {"name": "batch", "block": "batch", "depends_on": ["who"]},
                        {"name": "seen", "target": "context_value", "key": "outputs", "depends_on": ["batch"]},
                    ],
                }
            ],
        },
        "completed",
    ),
    "workflow-first-node-fails": (
        {
            "parallel_blocks": [{"name": "batch", "steps": MIXED_OK}],
            "workflows": [
                {
                    "name": "wf",
                    "steps": [
                        {"name": "first", "target": "fail", "message": "stop here"},
                        {"name": "batch", "block": "batch", "depends_on": ["first"]},
                    ],
                }
            ],
        },
        "failed",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_strategy_conforms(redis_cluster: Cluster, case: str) -> None:
    spec, status = CASES[case]
    both = run_both(redis_cluster.n3, spec, {"user": "ada"})
    assert both.celery.overall_status == status
    assert_conforms(both)


def test_retries_conform(redis_cluster: Cluster) -> None:
    def spec(tag: str) -> dict[str, Any]:
        steps = [{"name": "f", "target": "flaky", "failures": 1, "tag": f"{tag}-{uuid.uuid4().hex}"}]
        return block("all", steps, retry_failed=True, max_retries=2)

    both = run_both(redis_cluster.n3, spec("celery"), local_spec=spec("local"))
    assert both.celery.final_result == {"f": 2}
    assert_conforms(both)


def test_a_run_stops_at_its_first_failed_block_both_ways(redis_cluster: Cluster) -> None:
    both = run_both(redis_cluster.n3, CASES["program-first-block-fails"][0])
    for result in (both.celery, both.local):
        assert isinstance(result, WorkflowResult)
        assert (result.failed_node, list(result.blocks), result.outputs) == ("first", ["first"], {})
        assert result.final_result is None
        assert result.metadata["nodes"] == {"first": "failed"}


def test_the_local_results_say_where_they_ran(redis_cluster: Cluster) -> None:
    both = run_both(redis_cluster.n3, CASES["all"][0])
    assert isinstance(both.local, ParallelExecutionResult)
    assert both.local.metadata["executed_on"] == "local"
    assert {r.metadata["executed_on"] for r in both.local.results} == {"local"}
    assert {r.metadata["worker"] for r in both.celery.results} == {redis_cluster.worker.hostname}


# --- blocks decided before every step reported: where the losers had got to is a matter of timing -----

PATIENT = [
    {"name": "slow", "target": "patient", "seconds": 30},
    {"name": "slower", "target": "async_patient", "seconds": 30},
]

# spec, status, the steps whose outcome is certain (the others end cancelled: stopping, stopped or not started)
DECIDED: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "all-fail_fast": (block("all", [{"name": "bad", "target": "fail"}, *PATIENT]), "failed", ["bad"]),
    "map_reduce-fail_fast": (
        block("map_reduce", [{"name": "bad", "target": "fail"}, *PATIENT], reduce_function="sum"),
        "failed",
        ["bad"],
    ),
    "race": (block("race", [{"name": "fast", "target": "echo", "value": 7}, *PATIENT]), "completed", ["fast"]),
    "race-lost-by-a-failure": (block("race", [{"name": "bad", "target": "fail"}, *PATIENT]), "failed", ["bad"]),
    "any_success": (
        block(
            "any_success",
            [
                {"name": "bad", "target": "fail"},
                {"name": "ok", "target": "patient", "seconds": 0.5, "value": 5},
                *PATIENT,
            ],
        ),
        "completed",
        ["bad", "ok"],
    ),
    "timeout": (
        block("collect", [{"name": "quick", "target": "echo", "value": 1}, *PATIENT], timeout_seconds=1.5),
        "timeout",
        ["quick"],
    ),
}


def decided_view(result: Result, certain: list[str]) -> dict[str, Any]:
    """What a decided block's result must agree on, whatever its losers had done by then."""
    assert isinstance(result, ParallelExecutionResult)
    steps = {r.task_id: r for r in result.results}
    return {
        "status": result.overall_status,
        "final": comparable(result.final_result) if result.strategy != "collect" else None,
        "decided": result.metadata.get("decided"),
        "winner": result.metadata.get("winner"),
        "certain": {k: (steps[k].status, steps[k].result, steps[k].error) for k in certain},
        "others": {str(r.status) for r in result.results if r.task_id not in certain},
        "counts": (result.total_tasks, result.completed_tasks),
    }


@pytest.mark.parametrize("case", list(DECIDED))
def test_each_decided_block_conforms(redis_cluster: Cluster, case: str) -> None:
    spec, status, certain = DECIDED[case]
    both = run_both(redis_cluster.n3, spec)
    celery, local = decided_view(both.celery, certain), decided_view(both.local, certain)
    assert celery["status"] == status
    assert celery["others"] == {"cancelled"}
    assert local == celery
    assert where(both.celery) == {"celery"} and where(both.local) == {"local"}
