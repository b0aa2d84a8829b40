"""How the run view reads a step's filed outcome."""

from __future__ import annotations

from namel3ss_celery.events.runview import _step_of_envelope
from namel3ss_celery.plan.envelope import Envelope
from namel3ss_celery.plan.kinds import Outcome
from namel3ss_celery.results import TaskStatus


def envelope(status: TaskStatus, outcome: Outcome | None, start: float, end: float) -> str:
    return Envelope(key="s", status=status, result=None, error=None, start=start, end=end, outcome=outcome).encode()


def test_a_step_that_ran_shows_how_long_it_took_and_one_that_never_started_shows_no_time() -> None:
    ran = _step_of_envelope("s", envelope(TaskStatus.CANCELLED, Outcome.STOPPED, 10.0, 10.25), True)
    assert ran["duration_ms"] == 250.0 and ran["outcome"] == "stopped"
    never = _step_of_envelope("s", envelope(TaskStatus.CANCELLED, Outcome.NOT_STARTED, 10.0, 10.0), False)
    assert never["duration_ms"] is None and never["outcome"] == "not_started"
    assert _step_of_envelope("s", None, True) == {
        "name": "s",
        "status": "running",
        "outcome": None,
        "duration_ms": None,
        "error": None,
    }


def test_a_settled_step_that_never_started_shows_no_time_either() -> None:
    from namel3ss_celery.events.runview import _step_of_result

    never = {"task_id": "s", "status": "cancelled", "duration_ms": 0.0, "metadata": {"outcome": "not_started"}}
    assert _step_of_result(never)["duration_ms"] is None
    ran = {"task_id": "s", "status": "completed", "duration_ms": 12.5, "metadata": {}}
    assert _step_of_result(ran)["duration_ms"] == 12.5
