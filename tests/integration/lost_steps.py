"""A step whose pool child dies right after it succeeded (target ``dies_after_success``), a sibling that
outlives that child, and an app for workers that ack late.

``dies_after_success`` counts its runs under ``n3test:<tag>:runs``; a ``task_postrun`` receiver ends its
pool child (``os._exit(1)``) after its first successful run for a tag (SET NX of ``n3test:<tag>:died`` to the
child's pid), once Celery has stored the step's SUCCESS. A worker started with
``-A tests.integration.lost_steps`` serves the integration tests' app (``app.make_app``), with
``task_acks_late`` and ``task_reject_on_worker_lost`` (what at_least_once sets) when ``N3_TEST_LATE_ACK=1``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import current_task, states
from celery.signals import task_postrun

from namel3ss_celery import Namel3ssCelery, step
from namel3ss_celery.registry import STEP_TASK_PREFIX

from .app import make_app
from .steps import _redis

TARGET = "dies_after_success"
RUNS_KEY = "n3test:{tag}:runs"  # how many times the step ran
DIED_KEY = "n3test:{tag}:died"  # the pid of the pool child it ended


@step(TARGET)
def dies_after_success(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Counts its run under ``tag`` and returns it, with its task's delivery settings."""
    client = _redis()
    try:
        runs = int(client.incr(RUNS_KEY.format(tag=step["tag"])))
    finally:
        client.close()
    task = current_task._get_current_object()
    return {
        "tag": step["tag"],
        "runs": runs,
        "acks_late": bool(task.acks_late),
        "reject_on_worker_lost": bool(task.reject_on_worker_lost),
    }


@step("outlives_lost_child")
def outlives_lost_child(step: dict[str, Any], context: dict[str, Any]) -> Any:
    """Returns ``value`` once its worker has replaced the pool child that ``tag``'s step ended (waiting at most
    ``seconds``): by then the worker's main process has dealt with that child's ``WorkerLostError``."""
    task = current_task._get_current_object()
    me = task.request.hostname
    client = _redis()
    try:
        deadline = time.monotonic() + float(step["seconds"])
        while time.monotonic() < deadline:
            dead = client.get(DIED_KEY.format(tag=step["tag"]))
            if dead is not None:
                stats = (task.app.control.inspect([me], timeout=1.0).stats() or {}).get(me) or {}
                processes = stats.get("pool", {}).get("processes") or []
                if processes and int(dead) not in processes:
                    return step.get("value")
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError(f"the pool child of {step['tag']} was not replaced within {step['seconds']}s")


@task_postrun.connect
def _die_after_success(sender: Any = None, args: Any = None, state: Any = None, **_: Any) -> None:
    """After the first successful run of ``dies_after_success`` for a tag, end this pool child at once."""
    if getattr(sender, "name", None) != STEP_TASK_PREFIX + TARGET or state != states.SUCCESS:
        return
    payload = args[0] if args else None
    if not isinstance(payload, dict):
        return
    client = _redis()
    try:
        first = client.set(DIED_KEY.format(tag=payload["step"]["tag"]), os.getpid(), nx=True, ex=600)
    finally:
        client.close()
    if first:
        os._exit(1)  # the result is stored; the worker's main process sees a WorkerLostError


if "N3_TEST_BROKER" in os.environ:
    app = make_app(
        os.environ["N3_TEST_BROKER"],
        os.environ["N3_TEST_BACKEND"],
        os.environ["N3_TEST_QUEUE"],
        ignore_result=os.environ.get("N3_TEST_IGNORE_RESULT") == "1",
    )
    if os.environ.get("N3_TEST_LATE_ACK") == "1":
        app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)
    n3 = Namel3ssCelery(app)
