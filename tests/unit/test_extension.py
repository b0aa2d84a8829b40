"""``Namel3ssCelery`` on an app of its own, without a broker: registration, planning, eager runs, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from namel3ss_celery import (
    ConfigurationError,
    Namel3ssCelery,
    RunStatus,
    Settings,
    SpecError,
    UnknownRun,
    UnknownTarget,
    install,
)


@pytest.fixture
def n3() -> Namel3ssCelery:
    app = Celery("unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True  # a user's own test suite
    extension = Namel3ssCelery(app)

    @extension.step("double")
    def double(step: dict[str, Any], context: dict[str, Any]) -> int:
        return int(step["n"]) * 2

    return extension


def test_a_step_is_its_own_celery_task(n3: Namel3ssCelery) -> None:
    assert "n3.step.double" in n3.app.tasks
    assert install(n3.app) is n3  # installing again gives the same extension


def test_an_eager_dispatch_runs_here_and_reads_back_by_id(n3: Namel3ssCelery) -> None:
    steps = [{"name": f"s{i}", "target": "double", "n": i} for i in range(3)]
    handle = n3.dispatch({"name": "b", "strategy": "all", "steps": steps})
    result = n3.run(handle.id).get(timeout=5)
    assert result.overall_status == RunStatus.COMPLETED
    assert result.final_result == {"s0": 0, "s1": 2, "s2": 4}


def test_plan_refuses_what_a_worker_would_refuse_before_anything_is_recorded(n3: Namel3ssCelery) -> None:
    with pytest.raises(UnknownTarget, match="unknown target 'nope'"):
        n3.plan({"name": "b", "steps": [{"target": "nope"}]})
    with pytest.raises(SpecError):
        n3.dispatch({"name": "b", "strategy": "fastest", "steps": [{"target": "double", "n": 1}]})


def test_an_unknown_run_id_is_refused(n3: Namel3ssCelery) -> None:
    with pytest.raises(UnknownRun):
        n3.run("never-dispatched")


def test_serving_a_pool_needs_a_program(n3: Namel3ssCelery) -> None:
    with pytest.raises(ConfigurationError, match="NAMEL3SS_CELERY_PROGRAM"):
        n3.serve(pool="gpu")


def test_an_rpc_result_backend_is_refused_naming_the_setting() -> None:
    app = Celery("rpc", broker="memory://", backend="rpc://", set_as_current=False)
    with pytest.raises(ConfigurationError, match="result_backend") as caught:
        Namel3ssCelery(app)
    assert caught.value.setting == "result_backend"


def test_a_worker_of_no_pool_takes_the_programs_redis_visibility_timeout(tmp_path: Path) -> None:
    """kombu keeps one list of unacknowledged messages for every queue of a Redis broker, and each worker puts
    back those older than its own visibility timeout: a worker of the default queue (the events worker) must
    share the pool workers', or it delivers again their steps that run past kombu's 3600 s."""
    from celery import signals

    program = tmp_path / "program.yaml"
    program.write_text(
        "task_queues: [{name: long, visibility_timeout: 7200}]\nparallel_blocks: [{name: b, steps: [{target: t}]}]\n"
    )
    app = Celery("w", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", set_as_current=False)
    n3 = Namel3ssCelery(app, settings=replace(Settings.from_app(app, {}), program=str(program)))
    try:
        signals.import_modules.send(sender=app)  # as a starting worker does
        assert app.conf.broker_transport_options["visibility_timeout"] == 7200.0
    finally:
        n3.close()
