"""A process matches the events it emits itself only when it can start what its program's triggers name."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from namel3ss_celery.errors import UnknownTarget
from namel3ss_celery.events.program_events import ProgramEvents
from namel3ss_celery.events.stream import MemoryEventStore
from namel3ss_celery.events.watched import WatchedTypes

PROGRAM = {
    "parallel_blocks": [{"name": "known", "steps": [{"target": "x"}]}, {"name": "unknown", "steps": [{"target": "y"}]}],
    "event_triggers": [{"name": "a", "event_type": "custom", "trigger_target": "known"}],
}


def program_events(unknown: set[str]) -> tuple[ProgramEvents, list[str]]:
    planned: list[str] = []

    def plan(spec: Any, workflow: Any = None) -> Any:
        name = getattr(spec, "name", None) or str(spec)
        planned.append(name)
        if name in unknown:
            raise UnknownTarget(f"unknown target in {name}")
        return SimpleNamespace(name=name)

    watched = WatchedTypes(SimpleNamespace(conf=SimpleNamespace(task_default_queue="celery")), MemoryEventStore)
    return ProgramEvents(None, plan, watched), planned


def test_a_process_whose_triggers_all_plan_here_matches_here_and_plans_each_target_once() -> None:
    events, planned = program_events(unknown=set())
    events.use(PROGRAM)
    assert events.starts_here() and events.starts_here()
    assert len(planned) == 1


def test_a_process_that_cannot_plan_a_triggers_target_leaves_matching_to_the_workers_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, _planned = program_events(unknown={"unknown"})
    program = dict(PROGRAM)
    program["event_triggers"] = [
        *PROGRAM["event_triggers"],
        {"name": "b", "event_type": "custom", "trigger_target": "unknown"},
    ]
    events.use(program)
    with caplog.at_level(logging.INFO, "namel3ss_celery"):
        assert not events.starts_here()
        assert not events.starts_here()
    assert caplog.text.count("matched by the workers that can") == 1


def test_a_process_without_a_program_matches_nothing_here() -> None:
    events, _planned = program_events(unknown=set())
    assert events.program() is None and not events.starts_here() and events.triggers() == []


def test_step_modules_that_do_not_import_here_leave_matching_to_the_workers() -> None:
    from namel3ss_celery.errors import ConfigurationError

    def plan(spec: Any, workflow: Any = None) -> Any:
        raise ConfigurationError("NAMEL3SS_CELERY_STEP_MODULES lists 'proj.steps', which cannot be imported")

    watched = WatchedTypes(SimpleNamespace(conf=SimpleNamespace(task_default_queue="celery")), MemoryEventStore)
    events = ProgramEvents(None, plan, watched)
    events.use(PROGRAM)
    assert not events.starts_here()
