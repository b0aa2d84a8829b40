"""Holding a step from the moment its worker takes it (``worker.holding``), on the memory store."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from namel3ss_celery.engine.lost import held_member
from namel3ss_celery.errors import StoreUnavailable
from namel3ss_celery.worker.holding import hold_taken, holding_request
from tests.unit.engine.test_conductor import block, start


def test_a_taken_step_is_held_in_its_workers_name_as_its_start_guard_holds_it() -> None:
    conductor, recorder, _run_id = start(block("all", 1))
    message = recorder.sent[0]
    hold_taken(conductor, (message.encode(),), "w1", 41)
    assert conductor.store.held_steps("w1") == [held_member(message, 41)]


def test_at_least_once_steps_and_other_tasks_are_not_held() -> None:
    conductor, recorder, _run_id = start(block("all", 1))
    hold_taken(conductor, (replace(recorder.sent[0], deliveries=3).encode(),), "w1", 41)  # delivered again if lost
    hold_taken(conductor, ({"not": "a step"},), "w1", 41)
    hold_taken(conductor, (), "w1", 41)
    hold_taken(conductor, (recorder.sent[0].encode(),), "", 41)  # no worker name: nobody could file it for it
    assert conductor.store.held_steps("w1") == []


def test_a_store_that_does_not_answer_is_logged_and_the_step_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conductor, recorder, _run_id = start(block("all", 1))

    def down(_held: object) -> None:
        raise StoreUnavailable("Redis does not answer", store="redis://x")

    monkeypatch.setattr(conductor.store, "hold", down)
    with caplog.at_level(logging.WARNING, logger="namel3ss_celery"):
        hold_taken(conductor, (recorder.sent[0].encode(),), "w1", 41)
    assert "was taken without being held" in caplog.text


def test_the_request_class_extends_the_apps_own() -> None:
    from celery.worker.request import Request

    class Custom(Request):  # type: ignore[misc]
        pass

    conductor, _recorder, _run_id = start(block("all", 1))
    assert issubclass(holding_request(conductor, Custom), Custom)
    assert issubclass(holding_request(conductor, "celery.worker.request:Request"), Request)


def test_a_step_whose_block_has_a_deadline_is_not_held_before_it_starts() -> None:
    conductor, recorder, _run_id = start(block("all", 1, timeout_seconds=30))
    message = recorder.sent[0]
    assert message.deadline is not None
    hold_taken(conductor, (message.encode(),), "w1", 41)  # its block ends at its deadline anyway
    assert conductor.store.held_steps("w1") == []
