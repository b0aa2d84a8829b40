"""Retry countdowns per backoff, and delivery options per reliability."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.errors import RoutingError
from namel3ss_celery.routing import delivery_options, retry_countdown, retry_policy
from namel3ss_celery.spec import TaskQueueSpec


def queue(**fields: Any) -> TaskQueueSpec:
    return TaskQueueSpec(name="q", **fields)


@pytest.mark.parametrize(
    ("fields", "countdowns"),
    [
        ({"retry_backoff": "fixed", "initial_retry_delay": 2, "max_retries": 3}, [2, 2, 2]),
        ({"retry_backoff": "linear", "initial_retry_delay": 2, "max_retries": 4}, [2, 4, 6, 8]),
        ({"retry_backoff": "exponential", "initial_retry_delay": 1, "max_retries": 5}, [1, 2, 4, 8, 16]),
        (
            {"retry_backoff": "exponential", "initial_retry_delay": 2, "max_retry_delay": 10, "max_retries": 5},
            [2, 4, 8, 10, 10],
        ),
        ({"retry_backoff": "linear", "initial_retry_delay": 5, "max_retry_delay": 12, "max_retries": 3}, [5, 10, 12]),
        ({"retry_backoff": "fixed", "initial_retry_delay": 0, "max_retries": 2}, [0, 0]),
        ({"max_retries": 0}, []),
        ({}, [1, 2, 4]),  # the IR defaults: exponential from 1s, three retries
    ],
)
def test_retry_policy_gives_a_countdown_per_retry(fields: dict[str, Any], countdowns: list[float]) -> None:
    spec = queue(**fields)
    policy = retry_policy(spec)
    assert policy["countdowns"] == countdowns
    assert policy["max_retries"] == spec.max_retries == len(countdowns)
    assert policy["backoff"] == str(spec.retry_backoff)


def test_a_late_retry_stays_capped() -> None:
    assert retry_countdown(queue(max_retry_delay=60), 10_000) == 60


def test_negative_retries_are_refused() -> None:
    with pytest.raises(RoutingError, match="cannot be negative"):
        retry_countdown(queue(), -1)


@pytest.mark.parametrize(
    ("reliability", "options"),
    [
        ("at_most_once", {"acks_late": False, "reject_on_worker_lost": False}),
        ("at_least_once", {"acks_late": True, "reject_on_worker_lost": True}),
    ],
)
def test_delivery_options(reliability: str, options: dict[str, bool]) -> None:
    assert delivery_options(queue(reliability=reliability)) == options


def test_exactly_once_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(RoutingError) as info:
        delivery_options(queue(reliability="exactly_once"))
    message = str(info.value)
    assert "task queue 'q' asks for reliability exactly_once, which Celery cannot give" in message
    assert "at_least_once" in message and "idempotent" in message
