"""collection_paused(): automatic garbage collection stays off inside, on after the last thread leaves."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from namel3ss_celery.gc_pause import collection_paused, collection_resumed


@pytest.fixture(autouse=True)
def _collection_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_collection_is_off_inside_and_on_after() -> None:
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collection_comes_back_on_after_an_error() -> None:
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_blocks_turn_it_on_only_when_the_outer_one_ends() -> None:
    with collection_paused():
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_application_that_turned_collection_off_keeps_it_off() -> None:
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_thread_that_turned_it_off_turns_it_on_as_it_leaves_even_while_another_is_inside() -> None:
    # So overlapping dispatches of a threaded web server cannot keep collection off for good.
    first_inside = threading.Event()
    second_inside = threading.Event()
    first_left = threading.Event()
    seen: list[bool] = []

    def second() -> None:
        assert first_inside.wait(10)
        with collection_paused():  # finds it off: leaves it as it finds it
            second_inside.set()
            assert first_left.wait(10)
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())

    thread = threading.Thread(target=second)
    thread.start()
    with collection_paused():
        first_inside.set()
        assert second_inside.wait(10)
    first_left.set()
    thread.join(10)
    assert not thread.is_alive()
    assert seen == [True, True]
    assert gc.isenabled()


def test_collection_is_on_again_for_user_code_inside_a_pause() -> None:
    with collection_paused():
        with collection_resumed():
            assert gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_resuming_outside_a_pause_leaves_the_applications_choice() -> None:
    gc.disable()
    with collection_resumed():
        assert not gc.isenabled()  # the application turned it off, not this library
