"""The step message and the envelope: one encode, one decode, errors that name what is wrong."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from namel3ss_celery.errors import DecodeError, SchemaVersionError
from namel3ss_celery.plan.kinds import Join, Outcome
from namel3ss_celery.plan.message import SCHEMA_VERSION, Envelope, FedStep, StepMessage, Sticky
from namel3ss_celery.results import TaskStatus
from namel3ss_celery.spec import ParallelStrategy


def payload(target: str = "t", key: str = "s", **step: Any) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "run": "r",
        "node": "b",
        "i": 0,
        "n": 1,
        "key": key,
        "join": "chord",
        "step": {"target": target, **step},
        "context": {"user": "ada"},
    }


def full() -> StepMessage:
    return StepMessage(
        run="r",
        node="b",
        index=2,
        total=5,
        key="s",
        join=Join.COUNT,
        strategy=ParallelStrategy.RACE,
        step={"target": "t", "q": 1},
        context={"user": "ada"},
        fail_fast=True,
        retries=3,
        feed=True,
        deadline=1700000000.5,
        countdowns=(0.5, 1.0, 2.0),
        dlq="dead",
        sticky=Sticky("pool", "k"),
        retry_local=True,
        max_wait=30.0,
        max_wait_field="message_retention",
        deliveries=4,
        requeued_from="task-0",
        requeues=1,
    )


def test_a_message_survives_encode_json_and_decode() -> None:
    message = full()
    assert StepMessage.decode(json.loads(json.dumps(message.encode()))) == message


def test_a_minimal_message_decodes_with_the_defaults() -> None:
    message = StepMessage.decode(payload())
    assert (message.run, message.node, message.index, message.total, message.join) == ("r", "b", 0, 1, Join.CHORD)
    assert (message.retries, message.deadline, message.sticky, message.deliveries) == (0, None, None, None)
    assert message.encode() == {
        **payload(),
        "strategy": "all",
        "fail_fast": False,
        "retries": 0,
        "feed": False,
        "deadline": None,
    }


@pytest.mark.parametrize("version", [None, 0, 3, "1", 1.5, True])
def test_decode_refuses_an_unknown_schema_version(version: Any) -> None:
    with pytest.raises(SchemaVersionError, match=f"schema version {version!r} is not known"):
        StepMessage.decode({**payload(), "v": version})


def test_decode_refuses_a_message_without_a_version() -> None:
    message = payload()
    del message["v"]
    with pytest.raises(SchemaVersionError):
        StepMessage.decode(message)


@pytest.mark.parametrize("message", [None, "text", [1], 3])
def test_decode_refuses_a_non_mapping(message: Any) -> None:
    with pytest.raises(SchemaVersionError, match="carries a mapping"):
        StepMessage.decode(message)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"run": None}, "'run'"),
        ({"run": ""}, "'run'"),
        ({"i": -1}, "'i'"),
        ({"i": "0"}, "'i'"),
        ({"n": True}, "'n'"),
        ({"join": "other"}, "wrong type"),
        ({"step": [1]}, "'step'"),
        ({"context": "abc"}, "'context'"),
        ({"deadline": "soon"}, "'deadline'"),
        ({"strategy": "fastest"}, "wrong type"),
        ({"i": 1, "n": 1}, "index 1 is not below its block's 1 steps"),
    ],
)
def test_decode_names_the_field_that_is_wrong(change: dict[str, Any], named: str) -> None:
    with pytest.raises(DecodeError, match=named):
        StepMessage.decode({**payload(), **change})


@pytest.mark.parametrize("missing", ["run", "node", "i", "n", "key", "join", "step"])
def test_decode_names_a_missing_field(missing: str) -> None:
    message = payload()
    del message[missing]
    with pytest.raises(DecodeError, match=f"no {missing!r}"):
        StepMessage.decode(message)


def test_routing_reads_only_our_messages() -> None:
    assert StepMessage.routing(payload()) == StepMessage.decode(payload())
    assert StepMessage.routing({"run": "r"}) is None
    assert StepMessage.routing({**payload(), "i": "x"}) is None
    assert StepMessage.routing([1, 2]) is None


def test_expires_at_the_deadline_or_sooner_by_its_wait() -> None:
    message = full()
    assert message.expires(1699999990.0) == 1700000000.5  # the deadline comes first
    assert message.expires(1699999900.0) == 1699999930.0  # its wait comes first
    assert StepMessage.decode(payload()).expires(5.0) is None


def test_requeued_counts_its_requeues() -> None:
    again = full().requeued("task-9")
    assert (again.requeued_from, again.requeues) == ("task-9", 2)


def test_a_feed_item_survives_encode_and_decode() -> None:
    item = FedStep("t", full(), "q1")
    assert FedStep.decode(item.encode()) == item
    with pytest.raises(DecodeError):
        FedStep.decode('{"task": "t"}')


def test_an_envelope_survives_encode_and_decode() -> None:
    envelope = Envelope("s", TaskStatus.CANCELLED, None, "stopped", 1.0, 2.0, "w", "id", Outcome.STOPPED, "local")
    assert Envelope.decode(envelope.encode()) == envelope
    with pytest.raises(DecodeError):
        Envelope.decode('{"key": "s", "status": "sideways"}')


def test_an_envelope_carries_its_attempts_only_when_the_step_was_retried() -> None:
    once = Envelope("s", TaskStatus.COMPLETED, 1)
    assert "attempts" not in json.loads(once.encode())
    assert Envelope.decode(once.encode()).attempts == 1
    thrice = Envelope("s", TaskStatus.COMPLETED, 1, attempts=3)
    assert json.loads(thrice.encode())["attempts"] == 3
    assert Envelope.decode(thrice.encode()) == thrice


def test_an_envelope_names_the_dead_letter_queue_its_step_went_to() -> None:
    assert "dead_letter" not in json.loads(Envelope("s", TaskStatus.FAILED, error="x").encode())
    dead = Envelope("s", TaskStatus.FAILED, error="x", attempts=2, dead_letter="q.dead")
    assert Envelope.decode(dead.encode()) == dead


def test_a_message_with_a_stored_context_carries_its_reference_as_version_2() -> None:
    message = StepMessage.decode({**payload(), "context": {}})
    stored = replace(message, context_ref="b")
    data = stored.encode()
    assert (data["v"], data["context_ref"], data["context"]) == (2, "b", {})
    assert StepMessage.decode(data) == stored


@pytest.mark.parametrize(("version", "ref"), [(2, None), (1, "b")])
def test_version_2_and_a_context_reference_go_together(version: int, ref: str | None) -> None:
    data = {**payload(), "v": version, **({"context_ref": ref} if ref else {})}
    with pytest.raises(DecodeError, match="context_ref only with version 2"):
        StepMessage.decode(data)
