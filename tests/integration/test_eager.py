"""Under task_always_eager (a user's own test suite), dispatch runs in-process and returns the same result."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from celery import Celery

from namel3ss_celery import Namel3ssCelery


@pytest.fixture
def eager() -> Iterator[Namel3ssCelery]:
    import tests.integration.steps  # noqa: F401 - module-level @step functions

    # A broker nobody runs: an eager dispatch must not need one.
    app = Celery("eager", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.task_always_eager = True
    n3 = Namel3ssCelery(app)
    yield n3
    app.close()


def test_an_eager_dispatch_runs_in_process(eager: Namel3ssCelery) -> None:
    steps = [{"name": "a", "target": "echo", "value": 1}, {"name": "b", "target": "async_double", "value": 2}]
    handle = eager.dispatch({"name": "b", "steps": steps})
    result = handle.get(timeout=5)
    assert result.overall_status == "completed"
    assert result.final_result == {"a": 1, "b": 4}
    assert eager.run(handle.id).status() == "completed"
    assert result.metadata["executed_on"] == "local"


def test_an_eager_dispatch_from_async_code(eager: Namel3ssCelery) -> None:
    async def main() -> object:
        return await eager.dispatch({"name": "b", "steps": [{"target": "async_double", "value": 5}]}).aget(5)

    result = asyncio.run(main())
    assert result.final_result == {"step_0": 10}  # type: ignore[attr-defined]


def test_an_eager_failure_is_reported_the_same_way(eager: Namel3ssCelery) -> None:
    steps = [{"name": "ok", "target": "echo", "value": 1}, {"name": "bad", "target": "fail"}]
    result = eager.dispatch({"name": "b", "strategy": "collect", "steps": steps}).get(timeout=5)
    assert result.overall_status == "completed"
    assert result.final_result["bad"]["error"] == "ValueError: step failed on purpose"


def test_eager_steps_run_with_the_garbage_collector_on(eager: Namel3ssCelery) -> None:
    @eager.step("collector_state")
    def collector_state(step: dict[str, object], context: dict[str, object]) -> bool:
        return gc.isenabled()

    assert gc.isenabled()
    result = eager.dispatch({"name": "b", "steps": [{"name": "s", "target": "collector_state"}]}).get(timeout=5)
    assert result.final_result == {"s": True}
