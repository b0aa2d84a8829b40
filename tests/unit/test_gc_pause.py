"""collection_paused(): automatic garbage collection stays off inside, on after the last thread leaves."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from namel3ss_celery.gc_pause import collection_paused


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


def test_overlapping_threads_turn_it_on_when_the_last_one_leaves() -> None:
    first_inside = threading.Event()
    release_first = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collection_paused():
            first_inside.set()
            assert release_first.wait(10)
        seen.append(gc.isenabled())  # the main thread is still inside

    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(10)
    with collection_paused():
        release_first.set()
        thread.join(10)
        assert not thread.is_alive()
        assert not gc.isenabled()
    assert seen == [False]
    assert gc.isenabled()
