"""A step task that ends without running its step ends REVOKED, with the ``task-revoked`` event Flower and
``celery events`` need to see it end (``Ignore`` sends none): stopped, never started, its run's record
gone, or a repeat delivery of a step whose block already ended."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore

from namel3ss_celery.engine.conductor import Conductor
from namel3ss_celery.plan.message import StepMessage
from namel3ss_celery.registry import StepDef
from namel3ss_celery.results import TaskStatus
from namel3ss_celery.worker.step_task import StepHandler
from tests.unit.engine.test_conductor import block, report, start

pytestmark = pytest.mark.timeout(30)


class Backend:
    """The result backend as the step task uses it: the state it holds for the task, and what it was told."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.revoked: list[tuple[str, str]] = []

    def get_state(self, task_id: str) -> str:
        return self.state

    def mark_as_revoked(self, task_id: str, reason: str, request: Any = None) -> None:
        self.revoked.append((task_id, reason))
        self.state = "REVOKED"


class Task:
    """What the step task's body uses of a Celery task, recording the events it sends."""

    def __init__(self, app: Celery, task_id: str, state: str = "STARTED") -> None:
        self.app = app
        self.request = SimpleNamespace(id=task_id, hostname="w1@host", retries=0, n3_after=None)
        self.backend = Backend(state)
        self.send_events = True
        self.events: list[str] = []

    def send_event(self, type_: str, **fields: Any) -> None:
        self.events.append(type_)


def run_step(conductor: Conductor, message: StepMessage, task: Task) -> None:
    handler = StepHandler(task.app, conductor)
    definition = StepDef("t", lambda step, context: "ran")
    with pytest.raises(Ignore):
        handler.run(task, definition, message.encode())


@pytest.fixture
def app() -> Any:
    app = Celery("revoked", broker="memory://", set_as_current=False)
    yield app
    app.close()


def test_a_step_whose_runs_record_expired_ends_revoked(app: Celery) -> None:
    conductor, recorder, _run_id = start(block("all", 1))
    task = Task(app, "task-0")
    run_step(conductor, replace(recorder.sent[0], run="expired-run"), task)
    assert task.backend.revoked == [("task-0", "its run's record expired")]
    assert task.events == ["task-revoked"]


@pytest.mark.parametrize(
    ("stored", "marked"),
    [
        ("STARTED", [("task-0", "a repeat delivery: its block already ended")]),  # nothing final stored: REVOKED
        ("SUCCESS", []),  # the earlier delivery's result stays
        ("FAILURE", []),
    ],
)
def test_a_repeat_delivery_of_a_step_whose_block_ended_ends_revoked(
    app: Celery, stored: str, marked: list[tuple[str, str]]
) -> None:
    conductor, recorder, run_id = start(block("collect", 1))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 1)  # its first delivery ran, and the block ended
    assert conductor.store.run_record(run_id)
    task = Task(app, "task-0", stored)
    run_step(conductor, recorder.sent[0], task)
    assert task.backend.revoked == marked
    assert task.events == ["task-revoked"]  # Flower keeps an earlier SUCCESS or FAILURE it saw over this


def test_a_step_of_a_decided_block_ends_revoked_as_before(app: Celery) -> None:
    conductor, recorder, _run_id = start(block("race", 2))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 1)  # the race is won
    task = Task(app, "task-1")
    run_step(conductor, recorder.sent[1], task)
    assert task.backend.revoked == [("task-1", "block already decided")]
    assert task.events == ["task-revoked"]


def test_without_task_events_only_the_result_backend_is_told(app: Celery) -> None:
    conductor, recorder, _run_id = start(block("all", 1))
    task = Task(app, "task-0")
    task.send_events = False
    run_step(conductor, replace(recorder.sent[0], run="expired-run"), task)
    assert task.backend.revoked == [("task-0", "its run's record expired")] and task.events == []
