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


def test_kombu_redis_channels_still_put_back_what_they_hold_through_restore_unacked() -> None:
    from kombu.transport import redis as kombu_redis
    from kombu.transport.virtual import base

    assert "self._qos.restore_unacked_once()" in inspect.getsource(base.Channel.close)
    assert "self.restore_unacked()" in inspect.getsource(base.QoS.restore_unacked_once)
    restore = inspect.getsource(kombu_redis.QoS.restore_unacked)  # what keeping_restore_unacked does, tag by tag
    assert "with self.channel.conn_or_acquire(client) as client:" in restore
    assert "self.restore_by_tag(tag, client=client)" in restore and "self._delivered.clear()" in restore
    assert list(inspect.signature(kombu_redis.QoS.restore_by_tag).parameters)[:2] == ["self", "tag"]
    assert list(inspect.signature(kombu_redis.QoS.reject).parameters) == ["self", "delivery_tag", "requeue"]
    assert "self._remove_from_indices(delivery_tag).execute()" in inspect.getsource(kombu_redis.QoS.ack)


class _Failing:
    """A kombu Redis QoS whose server is away."""

    def __init__(self) -> None:
        self._delivered = {"tag-1": object(), "tag-2": object()}


def _away(*args: Any, **kwargs: Any) -> None:
    raise AttributeError("'NoneType' object has no attribute 'hostname'")  # a channel that let go of it


@pytest.fixture
def failing_kombu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from kombu.transport import redis as kombu_redis

    for name in ("restore_unacked", "ack", "reject"):
        monkeypatch.setattr(kombu_redis.QoS, name, _away)
    compat.keep_unrestored_messages()
    compat.HELD.take()
    yield kombu_redis.QoS
    compat.HELD.take()


def test_a_restore_that_fails_keeps_the_tags_and_raises_nothing(failing_kombu: Any) -> None:
    qos = _Failing()
    assert failing_kombu.restore_unacked(qos) is None
    assert qos._delivered == {}
    assert compat.HELD.take() == (["tag-1", "tag-2"], [])


def test_a_held_message_acknowledged_on_a_closed_channel_is_removed_not_put_back(failing_kombu: Any) -> None:
    failing_kombu.restore_unacked(_Failing())
    failing_kombu.ack(_Failing(), "tag-1")  # its step ended after the connection was lost
    failing_kombu.reject(_Failing(), "tag-2", requeue=True)  # rejected to be delivered again: stays held
    assert compat.HELD.take() == (["tag-2"], ["tag-1"])
    failing_kombu.ack(_Failing(), "tag-3")  # not held (put back already): nothing to do, nothing raised
    assert compat.HELD.take() == ([], [])


def test_restore_unrestored_keeps_what_it_could_not_do() -> None:
    done: list[str] = []

    class Pipe:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def execute(self) -> None:
            done.append(f"removed {self.tag}")

    class Qos:
        def _remove_from_indices(self, tag: str) -> Pipe:
            return Pipe(tag)

        def restore_by_tag(self, tag: str) -> None:
            if tag == "b":
                raise ConnectionError("away again")
            done.append(f"restored {tag}")

    class Channel:
        qos = Qos()

    compat.HELD.take()
    compat.HELD.keep(["a", "b", "c"])
    compat.HELD.keep_acked(["x"])
    with pytest.raises(ConnectionError):
        compat.restore_unrestored(Channel())
    assert done == ["removed x", "restored a"]
    assert compat.HELD.take() == (["b", "c"], [])
    compat.HELD.keep(["c"])
    assert compat.restore_unrestored(Channel()) == 1
    assert compat.restore_unrestored(object()) == 0  # not a virtual channel (RabbitMQ): nothing to do


def test_a_restore_that_fails_half_way_keeps_only_what_did_not_go_back(failing_kombu: Any) -> None:
    from contextlib import nullcontext

    back: list[str] = []

    class HalfWay(_Failing):
        channel = type("Channel", (), {"conn_or_acquire": staticmethod(lambda client=None: nullcontext(client))})

        def restore_by_tag(self, tag: str, client: Any = None) -> None:
            if tag == "tag-2":
                raise ConnectionError("gone half way")
            back.append(tag)

    qos = HalfWay()
    failing_kombu.restore_unacked(qos)
    assert back == ["tag-1"] and qos._delivered == {}
    assert compat.HELD.take() == (["tag-2"], [])


def test_an_acknowledgement_lost_before_the_channel_closed_is_removed_at_the_next_connection(
    failing_kombu: Any,
) -> None:
    qos = _Failing()
    failing_kombu.ack(qos, "tag-1")  # the broker went away as the step was acknowledged
    assert "tag-1" not in qos._delivered
    failing_kombu.restore_unacked(qos)  # then the channel closed: tag-2 is to go back, tag-1 not
    assert compat.HELD.take() == (["tag-2"], ["tag-1"])
