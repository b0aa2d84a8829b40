"""publish_canvas: the messages a node's group or chord makes, the same as Celery's own ``apply_async``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, canvas

from namel3ss_celery.compiler.publish import publish_canvas


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("publish-test", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_default_queue = f"q-{uuid.uuid4().hex}"
    yield app
    app.close()


def drain(app: Celery) -> list[dict[str, Any]]:
    """Every message on the default queue, oldest first: headers and decoded body."""
    messages = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(app.conf.task_default_queue, no_ack=True)) is not None:
            messages.append({"headers": message.headers, "body": message.decode()})
    return messages


def steps(app: Celery, count: int) -> list[canvas.Signature]:
    return [app.signature("n3.step.t", args=({"i": i},), immutable=True) for i in range(count)]


def body(app: Celery) -> canvas.Signature:
    settle = app.signature("n3.settle.chord", args=("run", "node"), immutable=True)
    settle.set(link_error=[app.signature("n3.settle.chord_failed", kwargs={"run_id": "run", "node": "node"})])
    return settle


def shape(message: dict[str, Any]) -> dict[str, Any]:
    """A message without the ids that differ from one publication to the next."""
    headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id", "group", "origin")}
    args, kwargs, embed = message["body"]
    chord = dict(embed["chord"] or {})
    chord["options"] = {k: v for k, v in chord.get("options", {}).items() if k not in ("task_id", "group_id")}
    return {"headers": headers, "args": args, "kwargs": kwargs, "embed": {**embed, "chord": chord}}


def test_a_group_sends_each_step_once_in_order(app: Celery) -> None:
    publish_canvas(app, canvas.group(steps(app, 11)))
    messages = drain(app)
    assert [m["body"][0][0]["i"] for m in messages] == list(range(11))
    assert len({m["headers"]["id"] for m in messages}) == 11
    assert all(m["headers"]["group"] is None for m in messages)


def test_a_chord_sends_what_celery_sends(app: Celery) -> None:
    canvas.chord(canvas.group(steps(app, 10)), body(app)).apply_async()
    expected = drain(app)
    publish_canvas(app, canvas.chord(canvas.group(steps(app, 10)), body(app)))
    sent = drain(app)
    assert [shape(m) for m in sent] == [shape(m) for m in expected]
    groups = {m["headers"]["group"] for m in sent}
    assert len(groups) == 1
    assert [m["headers"]["group_index"] for m in sent] == list(range(10))
    (group_id,) = groups
    assert {m["body"][2]["chord"]["options"]["group_id"] for m in sent} == {group_id}
    assert len({m["body"][2]["chord"]["options"]["task_id"] for m in sent}) == 1  # one body, frozen once


def test_a_header_from_a_generator_is_published_whole(app: Celery) -> None:
    publish_canvas(app, canvas.chord(canvas.group(s for s in steps(app, 3)), body(app)))
    assert [m["headers"]["group_index"] for m in drain(app)] == [0, 1, 2]


def test_the_chord_size_is_stored_before_the_last_header_task_is_sent(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, int]] = []

    def set_chord_size(group_id: str, size: int) -> None:
        seen.append((group_id, size, len(drain(app))))

    monkeypatch.setattr(app.backend, "set_chord_size", set_chord_size)
    publish_canvas(app, canvas.chord(canvas.group(steps(app, 5)), body(app)))
    assert [(size, before) for _, size, before in seen] == [(5, 4)]
