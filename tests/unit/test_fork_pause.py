"""A fork of a worker waits for the store calls its threads have in progress (``fork_pause``)."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from namel3ss_celery.fork_pause import PAUSE, ForkPause
from tests.waiting import wait_until


def test_a_fork_waits_for_the_call_in_progress_and_the_child_starts_with_none() -> None:
    entered, release = threading.Event(), threading.Event()
    events: list[str] = []

    def call() -> None:
        with PAUSE.call():
            entered.set()
            release.wait(10)
            events.append("call ended")

    thread = threading.Thread(target=call)
    thread.start()
    entered.wait(10)
    threading.Timer(0.2, release.set).start()
    pid = os.fork()
    if pid == 0:  # the child: no call of the parent's threads is in progress here, a call of its own starts at once
        with PAUSE.call():
            pass
        os._exit(0 if PAUSE._calls == 0 else 1)
    events.append("forked")
    thread.join(10)
    _, status = os.waitpid(pid, 0)
    assert events == ["call ended", "forked"]
    assert os.waitstatus_to_exitcode(status) == 0


def call_in_a_thread(pause: ForkPause) -> tuple[threading.Thread, threading.Event]:
    """A call started in a thread of its own; the event is set once it has started."""
    started = threading.Event()

    def call() -> None:
        with pause.call():
            started.set()

    thread = threading.Thread(target=call)
    thread.start()
    return thread, started


def test_a_call_does_not_start_while_a_fork_is_under_way() -> None:
    pause = ForkPause(wait=5)
    pause.before_fork()
    thread, started = call_in_a_thread(pause)
    assert not started.wait(0.2)
    pause.after_fork_in_parent()
    wait_until(started.is_set, 5, "the call did not start after the fork")
    thread.join(5)


def test_a_fork_goes_on_after_its_wait_when_a_call_does_not_end(caplog: pytest.LogCaptureFixture) -> None:
    pause = ForkPause(wait=0.1)
    entered, release = threading.Event(), threading.Event()

    def call() -> None:
        with pause.call():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=call)
    thread.start()
    entered.wait(10)
    with caplog.at_level(logging.WARNING, "namel3ss_celery"):
        pause.before_fork()
    pause.after_fork_in_parent()
    release.set()
    thread.join(5)
    assert "still runs after 0.1s" in caplog.text


def test_a_call_that_forks_does_not_wait_for_itself() -> None:
    pause = ForkPause(wait=5)
    with pause.call():
        started = time.monotonic()
        pause.before_fork()
        waited = time.monotonic() - started
        pause.after_fork_in_parent()
    assert waited < 1.0


def test_two_forks_at_once_keep_calls_out_until_both_are_done() -> None:
    pause = ForkPause(wait=5)
    pause.before_fork()
    pause.before_fork()
    pause.after_fork_in_parent()  # the first fork is done, the second is not
    thread, started = call_in_a_thread(pause)
    assert not started.wait(0.2)
    pause.after_fork_in_parent()
    wait_until(started.is_set, 5, "the call did not start after both forks")
    thread.join(5)
