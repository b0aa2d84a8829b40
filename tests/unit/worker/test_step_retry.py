"""A failing step's retry: the worker lets go of the step only once the retry's message is published."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Reject, Retry

from namel3ss_celery.engine.lost import held
from namel3ss_celery.engine.runner import StepOutcome
from namel3ss_celery.worker.step_task import StepHandler
from tests.unit.engine.test_conductor import block, start


class Task:
    """What ``_retry_if_due`` uses of a Celery task: its request, and ``retry`` (publishing, or failing to)."""

    def __init__(self, publishes: bool, seen: list[list[str]], holder: Any) -> None:
        self.request = SimpleNamespace(retries=0)
        self.publishes, self.seen, self.holder = publishes, seen, holder

    def retry(self, **options: Any) -> Retry:
        self.seen.append(self.holder())  # what the worker held as the retry went out
        if not self.publishes:
            raise Reject(ConnectionError("the broker is away"), requeue=False)
        return Retry(exc=options["exc"], when=options["countdown"])


@pytest.mark.parametrize("publishes", [True, False])
def test_a_step_is_held_until_its_retry_is_published_and_fails_saying_so_when_it_cannot_be(publishes: bool) -> None:
    conductor, recorder, _run_id = start(block("collect", 1))
    message = replace(recorder.sent[0], retries=2)
    holding = held(message, "w1", 60, pid=7)
    assert holding is not None
    conductor.control(message).start(0, "w1", "prefork", 7, "t0", holding)
    handler = StepHandler(Celery(broker="memory://", set_as_current=False), conductor)
    seen: list[list[str]] = []
    task = Task(publishes, seen, lambda: conductor.store.held_steps("w1"))
    outcome = StepOutcome.failure(message.key, ValueError("boom"), worker="w1")
    if publishes:
        with pytest.raises(Retry):
            handler._retry_if_due(task, message, outcome, stopping=lambda: False, holding=holding)
        assert conductor.store.held_steps("w1") == []  # let go once the retry is out
    else:
        handler._retry_if_due(task, message, outcome, stopping=lambda: False, holding=holding)
        assert conductor.store.held_steps("w1") == [holding.member]  # still held: it is filed as failed next
        assert "its retry could not be published: the broker is away" in (outcome.error or "")
    assert seen == [[holding.member]]  # held while the retry was being published
