"""The embedded default: a real Celery worker thread over the in-memory transport, no server."""

from __future__ import annotations

import copy
import datetime
import gc
import json
import threading
from collections.abc import Iterator
from enum import Enum, StrEnum
from typing import Any

import pytest

from namel3ss_celery import (
    ConfigurationError,
    Namel3ssCelery,
    RoutingError,
    Settings,
    SpecError,
    UnknownRun,
    install,
)


@pytest.fixture(scope="module")
def n3() -> Iterator[Namel3ssCelery]:
    import tests.integration.steps  # noqa: F401 - module-level @step functions

    embedded = Namel3ssCelery(settings=Settings.from_mapping({}))
    yield embedded
    embedded.close()


def test_the_embedded_default_needs_no_server(n3: Namel3ssCelery) -> None:
    assert n3.settings.embedded
    assert str(n3.app.conf.broker_url).startswith("memory://")
    steps = [{"name": "a", "target": "echo", "value": 1}, {"name": "b", "target": "async_double", "value": 2}]
    result = n3.dispatch({"name": "b", "steps": steps}).get(timeout=30)
    assert result.final_result == {"a": 1, "b": 4}
    assert {r.metadata["executed_on"] for r in result.results} == {"celery"}


@pytest.mark.parametrize(
    ("strategy", "extra", "status", "final"),
    [
        ("all", {}, "failed", {"ok": 3}),
        ("collect", {}, "completed", None),
        ("map_reduce", {"reduce_function": "sum"}, "failed", None),
    ],
)
def test_strategies_settle_the_same_way_embedded(
    n3: Namel3ssCelery, strategy: str, extra: dict[str, Any], status: str, final: Any
) -> None:
    steps = [{"name": "ok", "target": "echo", "value": 3}, {"name": "bad", "target": "fail"}]
    result = n3.dispatch({"name": "b", "strategy": strategy, "steps": steps, **extra}).get(timeout=30)
    assert result.overall_status == status
    assert result.failed_tasks == 1
    if final is not None:
        assert result.final_result == final


def test_a_large_block_finishes_embedded(n3: Namel3ssCelery) -> None:
    result = n3.dispatch({"name": "big", "steps": [{"target": "echo", "value": i} for i in range(500)]}).get(60)
    assert result.completed_tasks == 500
    assert result.final_result["step_499"] == 499


def test_context_must_be_json(n3: Namel3ssCelery) -> None:
    with pytest.raises(SpecError) as info:
        n3.dispatch({"name": "b", "steps": [{"target": "echo"}]}, context={"when": object()})
    assert info.value.path == "context"


def test_unknown_run(n3: Namel3ssCelery) -> None:
    with pytest.raises(UnknownRun):
        n3.run("nope").status()


def test_an_unknown_trigger_type_is_refused_naming_it(n3: Namel3ssCelery) -> None:
    trigger = {"name": "t", "event_type": "sometimes", "trigger_target": "b"}
    program = {"parallel_blocks": [{"name": "b", "steps": [{"target": "echo"}]}], "event_triggers": [trigger]}
    with pytest.raises(SpecError, match="unknown event type 'sometimes'") as info:
        n3.dispatch(program)
    assert info.value.path == "event_triggers[0].event_type"


def test_a_program_with_triggers_and_handlers_runs_its_blocks(n3: Namel3ssCelery) -> None:
    program = {
        "parallel_blocks": [{"name": "b", "steps": [{"target": "echo", "value": 1}]}],
        "event_triggers": [{"name": "t", "event_type": "custom", "trigger_target": "b"}],
        "event_handlers": [{"name": "h", "event_types": ["custom"], "route_to": "b"}],
    }
    assert n3.dispatch(program).get(timeout=30).overall_status == "completed"


def test_a_distributed_config_for_a_pool_the_program_lacks_is_refused(n3: Namel3ssCelery) -> None:
    program = {
        "parallel_blocks": [{"name": "b", "steps": [{"target": "echo"}]}],
        "distributed_configs": [{"worker_pool": "p"}],
    }
    with pytest.raises(RoutingError, match="no such worker pool"):
        n3.dispatch(program)


def test_an_rpc_backend_is_refused_naming_the_setting() -> None:
    from celery import Celery

    app = Celery("rpc", broker="memory://", backend="rpc://", set_as_current=False)
    with pytest.raises(ConfigurationError) as info:
        install(app)
    assert info.value.setting == "result_backend"


def test_install_twice_gives_the_same_instance() -> None:
    from celery import Celery

    app = Celery("twice", broker="memory://", backend="cache+memory://", set_as_current=False)
    assert install(app) is install(app)


@pytest.mark.parametrize("bad", [object(), float("nan"), b"bytes"])
def test_a_step_carrying_what_json_cannot_is_refused_at_dispatch(n3: Namel3ssCelery, bad: Any) -> None:
    with pytest.raises(SpecError, match="JSON cannot carry") as info:
        n3.dispatch({"name": "b", "steps": [{"target": "echo"}, {"target": "echo", "value": bad}]})
    assert info.value.path == "b.steps[1]"


class Colour(StrEnum):
    RED = "red"


class Shape(Enum):
    ROUND = 1


def test_a_str_enum_in_a_step_reaches_the_worker_as_its_value(n3: Namel3ssCelery) -> None:
    result = n3.dispatch({"name": "b", "steps": [{"name": "a", "target": "echo", "value": Colour.RED}]}).get(timeout=30)
    assert result.final_result == {"a": "red"}
    assert type(result.final_result["a"]) is str


def test_a_plain_enum_in_a_step_reaches_the_worker_as_its_value(n3: Namel3ssCelery) -> None:
    result = n3.dispatch({"name": "b", "steps": [{"name": "a", "target": "echo", "value": Shape.ROUND}]}).get(30)
    assert result.final_result == {"a": 1}


def test_block_metadata_goes_into_the_plan_as_json_mode_writes_it(n3: Namel3ssCelery) -> None:
    spec = {"name": "b", "steps": [{"target": "echo"}], "metadata": {"when": datetime.date(2026, 1, 1)}}
    plan = json.loads(n3.plan(spec).to_json())
    assert plan["nodes"][0]["block"]["metadata"] == {"when": "2026-01-01"}


def test_what_is_published_is_the_checked_copy_not_the_callers_objects(n3: Namel3ssCelery) -> None:
    steps = [{"name": "a", "type": "echo", "value": [1, 2]}, {"target": "echo", "priority": "3"}]
    spec = {"name": "b", "steps": steps}
    before = copy.deepcopy(spec)
    plan = n3.plan(spec)  # as dispatch_on_commit does, publishing when the transaction commits
    steps[0]["value"].append(float("nan"))  # the caller goes on using its objects
    assert spec != before
    result = n3.publish(plan).get(timeout=30)
    assert result.final_result["a"] == [1, 2]


def test_dispatching_a_large_block_starts_no_garbage_collection(n3: Namel3ssCelery) -> None:
    # Without the pause (gc_pause.py) these 5000 steps start dozens of collections, and one
    # call in a few pays for a full one.
    collections: list[int] = []
    caller = threading.get_ident()

    def record(phase: str, info: dict[str, Any]) -> None:
        # The embedded worker's thread may still be finishing the last test's run: only this thread counts.
        if phase == "start" and threading.get_ident() == caller:
            collections.append(info["generation"])

    spec = {"name": "big", "steps": [{"target": "echo", "value": {"i": i}} for i in range(5000)]}
    gc.collect()  # a clean start: building the spec above must not leave a collection due at dispatch's first line
    gc.callbacks.append(record)
    try:
        handle = n3.dispatch(spec)
    finally:
        gc.callbacks.remove(record)
    assert collections == []
    assert gc.isenabled()
    result = handle.get(timeout=120)
    assert result.completed_tasks == 5000
