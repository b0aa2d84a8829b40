"""Dead-letter routing that needs no broker: which queues dead-letter where, and what a step message carries."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.compiler.steps import step_message
from namel3ss_celery.errors import RoutingError
from namel3ss_celery.plan.kinds import Join
from namel3ss_celery.plan.model import Plan
from namel3ss_celery.spec import load_program
from namel3ss_celery.worker.dead_letters import dead_letter_sources


def program(*queues: dict[str, Any]) -> Any:
    return load_program(
        {
            "worker_pools": [{"name": q["name"], "queue_name": q["name"]} for q in queues],
            "task_queues": list(queues),
            "parallel_blocks": [{"name": "b", "steps": [{"target": "t", "worker_pool": queues[0]["name"]}]}],
        }
    )


def test_each_dead_letter_queue_is_known_with_the_task_queue_that_feeds_it() -> None:
    spec = program({"name": "cpu", "dead_letter_queue": "dead", "max_dead_letter_retries": 5}, {"name": "io"})
    sources = dead_letter_sources(spec)
    assert list(sources) == ["dead"] and sources["dead"].max_dead_letter_retries == 5


def test_queues_sharing_a_dead_letter_queue_must_agree_on_its_requeue_limit() -> None:
    spec = program(
        {"name": "cpu", "dead_letter_queue": "dead", "max_dead_letter_retries": 1},
        {"name": "io", "dead_letter_queue": "dead", "max_dead_letter_retries": 2},
    )
    with pytest.raises(RoutingError, match="share dead-letter queue 'dead' but differ in max_dead_letter_retries"):
        dead_letter_sources(spec)


@pytest.mark.parametrize(("queue", "expected"), [({"dead_letter_queue": "dead"}, "dead"), ({}, None)])
def test_a_step_message_names_its_dead_letter_queue(queue: dict[str, Any], expected: str | None) -> None:
    plan = Plan.from_json(make_plan(program({"name": "cpu", **queue})).to_json())  # as a worker reads it
    assert plan.pools["cpu"].dead_letter == expected
    payload = step_message(
        plan.nodes[0].block, 0, run_id="run1", node="b", context={}, join=Join.CHORD, pools=plan.pools
    ).encode()
    assert payload.get("dlq") == expected
