"""What ``worker.compat`` relies on in Celery, kombu and Django: each test fails loudly when an upgrade changes it.

The shims are also exercised end to end (chords on Redis, the embedded worker, an unknown target in a
chord, ``dispatch_on_commit``) by the integration tests; these tests name the exact internal each needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from celery.app.task import Context
from kombu.messaging import Producer

from namel3ss_celery.worker import compat
from tests.django_example import setup_django


def test_celery_still_has_the_join_will_block_switch() -> None:
    from celery import _state

    assert callable(_state._set_task_join_will_block), "celery._state._set_task_join_will_block is gone"
    _state._set_task_join_will_block(True)
    assert _state.task_join_will_block() is True
    compat.allow_join_in_thread()
    assert _state.task_join_will_block() is False


def test_a_task_context_still_takes_the_fields_of_a_chord_part() -> None:
    request = Context(id="t", group="g", group_index=3, chord={"task": "body"}, errbacks=None, delivery_info={})
    assert (request.id, request.group, request.group_index, request.chord) == ("t", "g", 3, {"task": "body"})


def test_the_backend_still_counts_chord_parts_with_on_chord_part_return() -> None:
    from celery.backends.redis import RedisBackend

    parameters = list(inspect.signature(RedisBackend.on_chord_part_return).parameters)
    assert parameters[:4] == ["self", "request", "state", "result"], parameters
    assert callable(RedisBackend.set_chord_size), "RedisBackend.set_chord_size is gone"
    assert states.FAILURE == "FAILURE"


def test_fail_chord_part_hands_the_part_to_the_backend() -> None:
    seen: list[tuple[Any, str, BaseException]] = []

    class Backend:
        def on_chord_part_return(self, request: Any, state: str, result: BaseException) -> None:
            seen.append((request, state, result))

    class App:
        backend = Backend()

    error = KeyError("n3.step.x")
    compat.fail_chord_part(App(), "t1", {"group": "g", "group_index": 1}, {"chord": {"task": "body"}}, error)
    ((request, state, result),) = seen
    assert (request.id, request.group, request.group_index, request.chord) == ("t1", "g", 1, {"task": "body"})
    assert (state, result) == (states.FAILURE, error)


def test_kombu_producers_still_batch() -> None:
    assert hasattr(Producer, "batch"), "kombu's Producer.batch is gone: publish_steps sends one message per round trip"
    assert "max_size" in inspect.signature(Producer.batch).parameters


def test_a_signature_still_takes_a_producer_and_a_chord_when_sent() -> None:
    app = Celery("compat", broker="memory://", set_as_current=False)
    sent: list[dict[str, Any]] = []

    @app.task(name="compat.t", shared=False)
    def t() -> None:
        """Nothing: only its message is looked at."""

    original = app.amqp.send_task_message

    def record(producer: Any, name: str, message: Any, **kwargs: Any) -> Any:
        sent.append({"producer": producer, "headers": message.headers, **kwargs})
        return original(producer, name, message, **kwargs)

    app.amqp.send_task_message = record  # type: ignore[method-assign]
    body = app.signature("compat.t")
    compat.publish_chord(app, [app.signature("compat.t"), app.signature("compat.t")], body)
    compat.publish_steps(app, [app.signature("compat.t")])
    assert len(sent) == 3
    assert [m["headers"].get("group_index") for m in sent[:2]] == [0, 1]
    assert sent[0]["headers"].get("group") == sent[1]["headers"].get("group") is not None
    assert sent[0]["producer"] is sent[1]["producer"]  # one producer for the whole chord


class Rollback(Exception):
    """Raised to leave an atomic block by rolling it back."""


@pytest.fixture(scope="module")
def django_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from django.db import connections

    yield setup_django(tmp_path_factory.mktemp("django") / "db.sqlite3")
    connections.close_all()


def test_django_still_keeps_on_commit_callbacks_as_tuples(django_db: Path) -> None:
    from django.db import transaction

    def callback() -> None:
        """Never run: the transaction rolls back."""

    connection = transaction.get_connection()
    with pytest.raises(Rollback), transaction.atomic():
        transaction.on_commit(callback)
        assert compat.on_commit_pending(connection, callback), (
            "Django no longer keeps (savepoint ids, callback, robust) in connection.run_on_commit"
        )
        raise Rollback
    assert not compat.on_commit_pending(connection, callback)
