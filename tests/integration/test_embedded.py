"""In-process workers, no server: the embedded default (a real Celery worker thread over the in-memory
transport) and the pytest plugin's (``namel3ss_celery.testing``: ``n3`` on the test's ``celery_app`` and
Celery's test worker, ``n3_worker``). What a run does is the same on both: each test that runs steps runs
on each; what only the embedded default does (start without a server, pause the collector while it
publishes) is tested on it alone."""

from __future__ import annotations

import copy
import datetime
import gc
import json
import threading
from collections.abc import Iterator
from enum import Enum, StrEnum
from typing import Any, cast

import pytest

import tests.integration.steps  # noqa: F401 - its module-level @step functions register on import
from namel3ss_celery import (
    ConfigurationError,
    Namel3ssCelery,
    RoutingError,
    Settings,
    SpecError,
    UnknownRun,
    install,
)

pytest_plugins = ["namel3ss_celery.testing"]


@pytest.fixture(scope="module")
def embedded_default() -> Iterator[Namel3ssCelery]:
    default = Namel3ssCelery(settings=Settings.from_mapping({}))
    yield default
    default.close()


@pytest.fixture()
def embedded(embedded_default: Namel3ssCelery) -> Namel3ssCelery:
    """The embedded default (no broker configured anywhere), its worker running."""
    assert embedded_default.embedded_worker is not None
    embedded_default.embedded_worker.start()  # again, after a test on the plugin's worker stopped it
    return embedded_default


@pytest.fixture()
def celery_worker_pool() -> str:
    return "threads"  # as the embedded default's worker


@pytest.fixture()
def celery_worker_parameters() -> dict[str, Any]:
    return {"concurrency": 4}


@pytest.fixture(scope="module", params=["embedded default", "pytest plugin"])
def worker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # module scope: the tests on each kind run together


@pytest.fixture()
def in_process(request: pytest.FixtureRequest, worker_kind: str, embedded_default: Namel3ssCelery) -> Namel3ssCelery:
    """namel3ss-celery with a worker in this process: the embedded default's, or the plugin's test worker.

    The two never run at once: both share the process's memory broker and Celery's worker state.
    """
    if worker_kind == "embedded default":
        return cast(Namel3ssCelery, request.getfixturevalue("embedded"))
    assert embedded_default.embedded_worker is not None
    embedded_default.embedded_worker.stop()
    request.getfixturevalue("n3_worker")  # after n3, which installs the module-level steps on the test app
    return cast(Namel3ssCelery, request.getfixturevalue("n3"))


def test_the_embedded_default_needs_no_server(embedded: Namel3ssCelery) -> None:
    assert embedded.settings.embedded
    assert str(embedded.app.conf.broker_url).startswith("memory://")
    steps = [{"name": "a", "target": "echo", "value": 1}, {"name": "b", "target": "async_double", "value": 2}]
    result = embedded.dispatch({"name": "b", "steps": steps}).get(timeout=30)
    assert result.final_result == {"a": 1, "b": 4}
    assert {r.metadata["executed_on"] for r in result.results} == {"celery"}


def test_a_run_s_workflow_started_is_in_the_stream_once_and_sent_to_celery_events_once(
    embedded: Namel3ssCelery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory store keeps no stream: the event service appends the event itself, once."""
    sent: list[str] = []
    send = embedded.events.celery_events.send
    monkeypatch.setattr(
        embedded.events.celery_events, "send", lambda event: (sent.append(event.event_type), send(event))
    )
    before = embedded.events.store().newest()
    handle = embedded.dispatch({"name": "b", "steps": [{"name": "a", "target": "echo", "value": 1}]})
    handle.get(timeout=30)
    started = [
        e
        for _i, e in embedded.events.store().read(before, count=10_000)
        if e.event_type == "workflow_started" and e.data.get("instance_id") == handle.id
    ]
    assert len(started) == 1
    assert sent.count("workflow_started") == 1


@pytest.mark.parametrize(
    ("strategy", "extra", "status", "final"),
    [
        ("all", {}, "failed", {"ok": 3}),
        ("collect", {}, "completed", None),
        ("map_reduce", {"reduce_function": "sum"}, "failed", None),
    ],
)
def test_strategies_settle_the_same_way_in_process(
    in_process: Namel3ssCelery, strategy: str, extra: dict[str, Any], status: str, final: Any
) -> None:
    steps = [{"name": "ok", "target": "echo", "value": 3}, {"name": "bad", "target": "fail"}]
    result = in_process.dispatch({"name": "b", "strategy": strategy, "steps": steps, **extra}).get(timeout=30)
    assert result.overall_status == status
    assert result.failed_tasks == 1
    if final is not None:
        assert result.final_result == final


def test_a_large_block_finishes_in_process(in_process: Namel3ssCelery) -> None:
    result = in_process.dispatch({"name": "big", "steps": [{"target": "echo", "value": i} for i in range(500)]}).get(60)
    assert result.completed_tasks == 500
    assert result.final_result["step_499"] == 499


def test_context_must_be_json(embedded: Namel3ssCelery) -> None:
    with pytest.raises(SpecError) as info:
        embedded.dispatch({"name": "b", "steps": [{"target": "echo"}]}, context={"when": object()})
    assert info.value.path == "context"


def test_unknown_run(embedded: Namel3ssCelery) -> None:
    with pytest.raises(UnknownRun):
        embedded.run("nope").status()


def test_an_unknown_trigger_type_is_refused_naming_it(embedded: Namel3ssCelery) -> None:
    trigger = {"name": "t", "event_type": "sometimes", "trigger_target": "b"}
    program = {"parallel_blocks": [{"name": "b", "steps": [{"target": "echo"}]}], "event_triggers": [trigger]}
    with pytest.raises(SpecError, match="unknown event type 'sometimes'") as info:
        embedded.dispatch(program)
    assert info.value.path == "event_triggers[0].event_type"


def test_a_program_with_triggers_and_handlers_runs_its_blocks(in_process: Namel3ssCelery) -> None:
    program = {
        "parallel_blocks": [{"name": "b", "steps": [{"target": "echo", "value": 1}]}],
        "event_triggers": [{"name": "t", "event_type": "custom", "trigger_target": "b"}],
        "event_handlers": [{"name": "h", "event_types": ["custom"], "route_to": "b"}],
    }
    assert in_process.dispatch(program).get(timeout=30).overall_status == "completed"


def test_a_distributed_config_for_a_pool_the_program_lacks_is_refused(embedded: Namel3ssCelery) -> None:
    program = {
        "parallel_blocks": [{"name": "b", "steps": [{"target": "echo"}]}],
        "distributed_configs": [{"worker_pool": "p"}],
    }
    with pytest.raises(RoutingError, match="no such worker pool"):
        embedded.dispatch(program)


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
def test_a_step_carrying_what_json_cannot_is_refused_at_dispatch(embedded: Namel3ssCelery, bad: Any) -> None:
    with pytest.raises(SpecError, match="JSON cannot carry") as info:
        embedded.dispatch({"name": "b", "steps": [{"target": "echo"}, {"target": "echo", "value": bad}]})
    assert info.value.path == "b.steps[1]"


class Colour(StrEnum):
    RED = "red"


class Shape(Enum):
    ROUND = 1


def test_a_str_enum_in_a_step_reaches_the_worker_as_its_value(in_process: Namel3ssCelery) -> None:
    block = {"name": "b", "steps": [{"name": "a", "target": "echo", "value": Colour.RED}]}
    result = in_process.dispatch(block).get(timeout=30)
    assert result.final_result == {"a": "red"}
    assert type(result.final_result["a"]) is str


def test_a_plain_enum_in_a_step_reaches_the_worker_as_its_value(in_process: Namel3ssCelery) -> None:
    block = {"name": "b", "steps": [{"name": "a", "target": "echo", "value": Shape.ROUND}]}
    result = in_process.dispatch(block).get(timeout=30)
    assert result.final_result == {"a": 1}


def test_block_metadata_goes_into_the_plan_as_json_mode_writes_it(embedded: Namel3ssCelery) -> None:
    spec = {"name": "b", "steps": [{"target": "echo"}], "metadata": {"when": datetime.date(2026, 1, 1)}}
    plan = json.loads(embedded.plan(spec).to_json())
    assert plan["nodes"][0]["block"]["metadata"] == {"when": "2026-01-01"}


def test_what_is_published_is_the_checked_copy_not_the_callers_objects(in_process: Namel3ssCelery) -> None:
    steps = [{"name": "a", "type": "echo", "value": [1, 2]}, {"target": "echo", "priority": "3"}]
    spec = {"name": "b", "steps": steps}
    before = copy.deepcopy(spec)
    plan = in_process.plan(spec)  # as dispatch_on_commit does, publishing when the transaction commits
    steps[0]["value"].append(float("nan"))  # the caller goes on using its objects
    assert spec != before
    result = in_process.publish(plan).get(timeout=30)
    assert result.final_result["a"] == [1, 2]


def test_dispatching_a_large_block_starts_no_garbage_collection(embedded: Namel3ssCelery) -> None:
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
        handle = embedded.dispatch(spec)
    finally:
        gc.callbacks.remove(record)
    assert collections == []
    assert gc.isenabled()
    result = handle.get(timeout=120)
    assert result.completed_tasks == 5000
