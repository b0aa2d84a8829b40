"""Recording and publishing a checked plan as a run, and the handle that reads it back.

``Namel3ssCelery.publish`` (and so ``dispatch``) ends here: under ``task_always_eager`` the run happens in
this process (``eager``); otherwise the broker is checked (an unreachable one is the caller's error,
before anything is recorded), the run is recorded with its ``workflow_started`` event, and its first
messages go out (``compiler.starting``).
"""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery

from .apps import broker_identity, check_broker
from .compiler.checks import check_plan, check_visibility
from .compiler.planning import make_plan
from .compiler.starting import start_run
from .compiler.support import check_program_supported
from .eager import run_eagerly
from .engine.conductor import Conductor
from .engine.ports import CoordinationStore
from .events.lifecycle import run_started
from .events.matching import check_triggers
from .events.service import EventService
from .events.stream import stream_entry
from .plan.model import Plan
from .registry import Registry
from .routing.consumers import run_idle_queues
from .runs import RunHandle
from .settings import Settings
from .spec import ProgramSpec, load_any
from .worker.embedded import EmbeddedWorker


class Host(Protocol):
    """What publishing needs of ``Namel3ssCelery``."""

    app: Celery
    settings: Settings
    registry: Registry
    conductor: Conductor
    events: EventService
    embedded_worker: EmbeddedWorker | None

    @property
    def store(self) -> CoordinationStore: ...

    def load_step_modules(self) -> None: ...


def checked_plan(n3: Host, spec: Any, workflow: str | None) -> Plan:
    """The plan of ``spec`` (a spec object, a mapping or a file path), checked against ``n3``'s steps and
    broker: ``Namel3ssCelery.plan``.

    Raises:
        SpecError, CompileError: what is wrong with the spec, naming it (nothing was published).
    """
    loaded = load_any(spec)
    if isinstance(loaded, ProgramSpec):
        check_program_supported(loaded)
        check_triggers(loaded)
    plan = make_plan(loaded, workflow)
    n3.load_step_modules()
    check_plan(plan, n3.registry, n3.settings.step_modules)  # computes the plan's JSON, which dispatch stores
    check_visibility(plan, str(n3.app.conf.broker_url or ""))
    return plan


def publish_run(n3: Host, plan: Plan, initial: dict[str, Any], run_id: str) -> RunHandle:
    """Record run ``run_id`` of ``plan`` with context ``initial`` and send it on its way; its handle.

    Raises:
        BrokerUnavailable: the broker cannot be reached (nothing was published or recorded).
    """
    settings = n3.settings
    if n3.app.conf.task_always_eager:  # a user's test suite: run here, as Celery runs eager tasks
        run_eagerly(n3.registry, n3.store, plan, initial, run_id, settings.step_modules, settings.result_expires)
        return run_handle(n3, run_id)
    if n3.embedded_worker is not None:
        n3.embedded_worker.start()
    else:
        check_broker(n3.app)
    started = run_started(run_id, plan, initial)  # written with the run's record where the store can
    start_run(
        n3.app,
        n3.store,
        n3.conductor,
        plan,
        initial,
        run_id,
        settings.result_expires,
        recorded=lambda in_stream: n3.events.announce(started, in_stream),  # before any step can end the run
        broker=broker_identity(n3.app),
        first_event=stream_entry(started),
    )
    return run_handle(n3, run_id)


def run_handle(n3: Host, run_id: str) -> RunHandle:
    """The handle of run ``run_id``: its store, how to cancel it, and which of its queues nobody consumes."""

    def idle_queues(run_id: str) -> dict[str, list[str]]:
        return run_idle_queues(n3.app, n3.store.run_record(run_id))

    return RunHandle(lambda: n3.store, n3.conductor.cancel, run_id, idle_queues)
