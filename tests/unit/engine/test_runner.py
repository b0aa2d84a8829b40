"""The step runner: calling sync and async steps, JSON results, failures, message checks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from namel3ss_celery.engine import runner
from namel3ss_celery.engine.runner import call_step
from namel3ss_celery.engine.values import to_json_data
from namel3ss_celery.errors import StepCancelled, StepResultError
from namel3ss_celery.plan.message import StepMessage
from namel3ss_celery.registry import StepDef
from tests.unit.plan.test_message import payload


def run(function: Any, message: dict[str, Any] | None = None) -> runner.StepOutcome:
    decoded = StepMessage.decode(message or payload())
    return call_step(StepDef("t", function), decoded, worker="w@host", task_id="task-1")


def test_a_sync_step_gets_its_step_and_context() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def echo(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        seen.append((step, context))
        return {"query": step["query"], "user": context["user"]}

    outcome = run(echo, payload(query="celery"))
    assert (outcome.status, outcome.result, outcome.error, outcome.exception) == (
        "completed",
        {"query": "celery", "user": "ada"},
        None,
        None,
    )
    assert seen == [({"target": "t", "query": "celery"}, {"user": "ada"})]
    assert (outcome.key, outcome.worker, outcome.task_id) == ("s", "w@host", "task-1")
    assert outcome.start <= outcome.end


def test_a_step_cannot_change_the_message() -> None:
    message = StepMessage.decode(payload(query="celery"))

    def mutate(step: dict[str, Any], context: dict[str, Any]) -> None:
        step["query"] = "changed"
        context["user"] = "changed"

    assert call_step(StepDef("t", mutate), message, worker="w", task_id="t").status == "completed"
    assert message.step["query"] == "celery"
    assert message.context["user"] == "ada"


def test_an_async_step_runs_to_its_result() -> None:
    async def double(step: dict[str, Any], context: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return int(step["n"]) * 2

    assert run(double, payload(n=21)).result == 42
    assert run(double, payload(n=1)).result == 2  # the loop is reused


def test_a_missing_context_is_an_empty_dict() -> None:
    message = payload()
    del message["context"]
    assert run(lambda step, context: context, message).result == {}


async def _async_fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    raise ValueError("async boom")


def _raise(exc: BaseException) -> Any:
    def step_function(step: dict[str, Any], context: dict[str, Any]) -> None:
        raise exc

    return step_function


@pytest.mark.parametrize(
    ("function", "error"),
    [
        (_raise(ValueError("bad input")), "ValueError: bad input"),
        (_raise(KeyError("doc")), "KeyError: 'doc'"),
        (_raise(RuntimeError()), "RuntimeError"),
        (_async_fail, "ValueError: async boom"),
        (lambda step, context: 1 / 0, "ZeroDivisionError: division by zero"),
    ],
)
def test_exceptions_become_failed_outcomes(function: Any, error: str) -> None:
    outcome = run(function)
    assert outcome.status == "failed"
    assert outcome.error == error
    assert outcome.result is None
    assert isinstance(outcome.exception, Exception)


def test_step_cancelled_becomes_a_cancelled_outcome() -> None:
    outcome = run(_raise(StepCancelled("asked to stop")))
    assert (outcome.status, outcome.error) == ("cancelled", "StepCancelled: asked to stop")


def test_outside_a_step_cancelled_is_false() -> None:
    assert runner.cancelled() is False


@pytest.mark.parametrize(
    ("value", "mentions"),
    [
        (object(), "JSON cannot carry"),
        (float("nan"), "returned nan, which JSON cannot carry"),
        (float("inf"), "returned inf, which JSON cannot carry"),
        ({1, 2}, "JSON cannot carry"),
        ({"nested": [float("nan")]}, "JSON cannot carry"),
        ({(1, 2): "tuple key"}, "JSON cannot carry"),
        (b"bytes", "JSON cannot carry"),
        ({"flat": float("nan")}, "JSON cannot carry"),
        ({"flat": object()}, "JSON cannot carry"),
    ],
)
def test_a_non_json_result_fails_the_step(value: Any, mentions: str) -> None:
    outcome = run(lambda step, context: value)
    assert outcome.status == "failed"
    assert mentions in (outcome.error or "")
    assert outcome.error.startswith("StepResultError: step 's' (t) returned")  # type: ignore[union-attr]
    assert isinstance(outcome.exception, StepResultError)


@pytest.mark.parametrize(
    ("value", "as_json"),
    [
        (None, None),
        ("text", "text"),
        ((1, 2), [1, 2]),
        ({"a": (1,)}, {"a": [1]}),
        ({1: "x"}, {"1": "x"}),
        (1.5, 1.5),
        ({"a": 1, "b": "x", "c": None, "d": True, "e": 2.5}, {"a": 1, "b": "x", "c": None, "d": True, "e": 2.5}),
        ({"a": 1, 2: "int key"}, {"a": 1, "2": "int key"}),
    ],
)
def test_to_json_data_gives_back_what_json_carries(value: Any, as_json: Any) -> None:
    assert to_json_data(value, "v") == as_json


def test_to_json_data_gives_a_copy_of_a_dict() -> None:
    value = {"a": 1}
    copied = to_json_data(value, "v")
    copied["a"] = 2
    assert value == {"a": 1}


def test_the_envelope_is_json_with_the_outcome() -> None:
    outcome = run(lambda step, context: [1, "two"])
    envelope = json.loads(outcome.envelope())
    assert envelope == {
        "key": "s",
        "status": "completed",
        "result": [1, "two"],
        "error": None,
        "start": outcome.start,
        "end": outcome.end,
        "worker": "w@host",
        "task_id": "task-1",
        "outcome": None,
    }


def _stop_after(calls: int) -> Any:
    """A ``check`` that says stop from its ``calls``-th question on."""
    asked = {"n": 0}

    def check() -> bool:
        asked["n"] += 1
        return asked["n"] >= calls

    return check


def test_watched_stops_a_step_its_check_stops_and_its_task_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CHECK_INTERVAL", 0.001)
    seen: list[str] = []

    async def step() -> str:
        await asyncio.Event().wait()  # never ends by itself
        return "never"

    async def main() -> None:
        with pytest.raises(StepCancelled):
            await runner.watched(step(), _stop_after(3))
        await asyncio.sleep(0)  # the task was not left cancelled: it goes on to file the stop
        seen.append("went on")
        task = asyncio.current_task()
        assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0

    asyncio.run(main())
    assert seen == ["went on"]


def test_watched_stops_a_step_that_swallows_the_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CHECK_INTERVAL", 0.001)

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "carried on"
        return "never"

    async def main() -> None:
        with pytest.raises(StepCancelled):
            await runner.watched(stubborn(), _stop_after(2))

    asyncio.run(main())


def test_a_cancellation_from_outside_is_not_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CHECK_INTERVAL", 0.001)

    async def step() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.ensure_future(runner.watched(step(), lambda: False))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_watched_gives_back_the_value_and_leaves_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CHECK_INTERVAL", 0.001)
    asked: list[int] = []

    async def step() -> int:
        await asyncio.sleep(0.005)
        return 7

    def check() -> bool:
        asked.append(1)
        return False

    async def main() -> int:
        value = await runner.watched(step(), check)
        before = len(asked)
        await asyncio.sleep(0.01)  # a timer left behind would go on asking
        assert len(asked) == before
        return value

    assert asyncio.run(main()) == 7
    assert asked  # it was asked while the step ran
