"""``Namel3ssCelery``: install namel3ss-celery on a Celery app, dispatch specs, read runs back."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, signals

from .apps import broker_identity, check_backend, make_app
from .compiler.checks import check_context
from .compiler.publisher import CeleryPublisher
from .engine.conductor import Conductor
from .engine.home import Home
from .engine.ports import CoordinationStore
from .engine.runner import install_log_ids
from .errors import UnknownRun
from .events.beat import Firing, merge_program_schedules, register_schedule_task
from .events.model import Event, EventPriority
from .events.service import EventService
from .events.tasks import register_event_tasks
from .gc_pause import collection_paused
from .plan import fields
from .plan.model import Plan
from .publishing import checked_plan, publish_run, run_handle
from .registry import SHARED, ReducerFunction, Registry, StepFunction, import_step_modules
from .results import ParallelExecutionResult, WorkflowResult
from .runs import RunHandle
from .settings import Settings
from .spec import ParallelBlockSpec, ProgramSpec, WorkflowSpec
from .tracing import span
from .worker.embedded import EmbeddedWorker
from .worker.pool_option import add_pool_option
from .worker.pools import PoolService, serve_placement, serve_pool, use_all_redis_priorities, use_program_visibility
from .worker.reconnect import add_restore_on_reconnect
from .worker.redis_store import open_store
from .worker.signals import connect_step_signals
from .worker.step_task import StepHandler
from .worker.store import MemoryStore
from .worker.tasks import StepTasks, register_adapter_tasks
from .worker.watchdog import add_watchdog

if TYPE_CHECKING:
    from .events.schedule_api import RuntimeSchedules

logger = logging.getLogger("namel3ss_celery")

STEP_EVENTS = "NAMEL3SS_CELERY_STEP_EVENTS"  # "1": workers announce each step's outcome as an event

SpecSource = ParallelBlockSpec | WorkflowSpec | ProgramSpec | Mapping[str, Any] | str | Path
RunResult = ParallelExecutionResult | WorkflowResult


class Namel3ssCelery:
    """namel3ss-celery installed on one Celery app.

    Registers every step as the task ``n3.step.<target>`` (with the app's own
    task class), the adapter's settle tasks, and the worker-side hooks that load
    ``NAMEL3SS_CELERY_STEP_MODULES``.

    Args:
        app: the user's Celery app; ``None`` builds one from the environment
            (the embedded default when no broker is set).
        settings: overrides what is read from the app and the environment.
        own_worker: on the in-memory broker, start an embedded worker at the first dispatch; ``False`` when
            another worker of this process consumes it (the ``celery_worker`` of a test: see ``testing``).

    Raises:
        ConfigurationError: the app's result backend cannot join (``rpc://``), or
            there is no coordination store (Redis) for a non-memory broker.
    """

    def __init__(self, app: Celery | None = None, *, settings: Settings | None = None, own_worker: bool = True) -> None:
        if app is None:
            settings = settings or Settings.from_env()
            app = make_app(settings)
        self.app = app
        self.settings = settings or Settings.from_app(app)
        check_backend(app)
        use_all_redis_priorities(app)
        self._coordination_url = self.settings.coordination()
        self.registry = Registry(parent=SHARED)
        self._store: CoordinationStore | None = None
        self._eager_store = MemoryStore()
        self.pool_service: PoolService | None = None  # what this process consumes as a pool worker
        self._store_lock = threading.Lock()
        self._modules_loaded = False
        embedded = self.settings.embedded and own_worker
        self.embedded_worker: EmbeddedWorker | None = EmbeddedWorker(app) if embedded else None
        self.conductor = Conductor(
            lambda: self.store, None, self.registry, self.settings.result_expires, patience=self.settings.store_patience
        )
        self.conductor.connect(CeleryPublisher(app, self.conductor))
        self.conductor.home = Home(lambda: self.store, lambda: broker_identity(app))
        self.events = EventService(
            app,
            self._events_url,
            self.settings.program,
            self.plan,
            self.publish,
            self.registry,
            self._run_context,
            self.run,
            self.settings.match_events,
            self.settings.store_patience,
        )
        register_event_tasks(app, self.events)
        self.firing = Firing(lambda: self.store, self.events.program, self.dispatch, self.events.announce)
        register_schedule_task(app, self.firing)
        self._schedules: Any = None
        if self.embedded_worker is not None:  # it matches the events (an eager app matches them in the caller)
            worker = self.embedded_worker
            self.events.before_publish = lambda: None if app.conf.task_always_eager else worker.start()
        self.conductor.run_ended.append(self.events.run_ended)
        self.conductor.block_moved.append(self.events.block_moved)
        self.steps = StepHandler(app, self.conductor)
        if os.environ.get(STEP_EVENTS, "").lower() in ("1", "true", "yes", "on"):
            self.steps.on_step = self.events.step_done  # a task_completed or task_failed per step
        register_adapter_tasks(app, self.conductor)
        self.step_tasks = StepTasks(app, self.steps, self.conductor, self.registry)
        signals.import_modules.connect(self._on_import_modules)
        self._signal_handlers = connect_step_signals(app, self.conductor, self.steps)
        install_log_ids()
        add_pool_option(app, self)
        add_watchdog(app, self.conductor)
        add_restore_on_reconnect(app)
        serve_placement(app, self)
        if self.settings.pool:
            self.serve(pool=self.settings.pool)
        app.namel3ss = self  # type: ignore[attr-defined]

    # --- registration -------------------------------------------------------

    def step(self, target: str) -> Callable[[StepFunction], StepFunction]:
        """Register a step function (sync or ``async def``) on this app as ``n3.step.<target>``."""
        return self.registry.registering_step(target)

    def reducer(self, name: str) -> Callable[[ReducerFunction], ReducerFunction]:
        """Register a map_reduce reducer ``(results: list) -> value`` on this app."""
        return self.registry.registering_reducer(name)

    def load_step_modules(self) -> None:
        """Import ``NAMEL3SS_CELERY_STEP_MODULES`` once and register their functions as ``module:function``."""
        if not self._modules_loaded:
            import_step_modules(self.settings.step_modules, self.registry)
            self._modules_loaded = True

    def _on_import_modules(self, sender: Any = None, **_: Any) -> None:
        if sender is self.app:
            self.load_step_modules()
            program = self.events.program()  # a worker with a bad program (NAMEL3SS_CELERY_PROGRAM) fails as it starts
            merge_program_schedules(self.app, program)  # beat (and worker -B) runs the program's schedules
            if program is not None and not self.settings.pool:  # a pool worker's serve_pool did it
                use_program_visibility(self.app, program)

    @property
    def program_file(self) -> str | None:
        """The program file pool workers load (``NAMEL3SS_CELERY_PROGRAM``)."""
        return self.settings.program

    @property
    def pool_name(self) -> str | None:
        """The worker pool this process serves, if any."""
        return self.settings.pool

    def serve(self, pool: str | None = None, region: str | None = None) -> None:
        """Serve worker pool ``pool`` in this process (see ``worker.pools.serve_pool``); ``region``: the region
        whose queue it also consumes (given before the pool, as ``--n3-region`` is)."""
        if region is not None:
            self.settings = replace(self.settings, region=region)
        if pool is not None:
            self.settings = replace(self.settings, pool=pool)
            self.pool_service = serve_pool(self.app, self.steps, self.settings.program, pool, self.settings.region)

    # --- the coordination store -----------------------------------------------

    @property
    def store(self) -> CoordinationStore:
        """The coordination store (Redis, or in-memory for the embedded default), made on first use."""
        if self.app.conf.task_always_eager:
            return self._eager_store  # eager runs never leave this process: neither does their record
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self._coordination_url)
        return self._store

    # --- events -------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        source: str = "application",
        correlation_id: str | None = None,
        priority: int = EventPriority.NORMAL,
    ) -> Event:
        """Publish an event (``custom``, ``webhook``, ``message``, ``dataset_change``, ``manual``, ...): it goes
        to the deployment's stream, and workers start what their program's triggers name for it (see
        ``events.service``).

        Raises:
            SpecError: an unknown event type (or one the adapter announces itself), data that is not a
                mapping of JSON data (nothing was published).
        """
        return self.events.emit(event_type, data, source=source, correlation_id=correlation_id, priority=priority)

    @property
    def schedules(self) -> RuntimeSchedules:
        """Schedules changed at runtime: ``add``, ``remove``, ``get``, ``list``. RedBeat entries in Redis
        (the ``beat`` extra; ``events.redbeat.Schedules``), or, when the app's ``beat_scheduler`` is a
        django-celery-beat ``DatabaseScheduler``, its ``PeriodicTask`` rows (``events.django_beat``)."""
        if self._schedules is None:
            from .events.schedule_stores import runtime_schedules

            self._schedules = runtime_schedules(self.app, self.events.program)
        return self._schedules  # type: ignore[no-any-return]

    def _events_url(self) -> str:
        return "memory://" if self.app.conf.task_always_eager else self._coordination_url

    def _run_context(self, run_id: str) -> dict[str, Any] | None:
        (text,) = self.store.get_fields(run_id, [fields.CONTEXT])
        return json.loads(text) if text else None

    # --- dispatch and runs -------------------------------------------------------

    def dispatch(
        self, spec: SpecSource, context: Mapping[str, Any] | None = None, *, workflow: str | None = None
    ) -> RunHandle:
        """Validate ``spec``, record a run and publish one launch message; return at once.

        Args:
            spec: a ``ParallelBlockSpec``, ``WorkflowSpec``, ``ProgramSpec``, a mapping or a file path.
            context: JSON data every step receives as its ``context``.
            workflow: which workflow of a program to run, when it has several.

        Returns:
            The run's handle; ``handle.id`` reads it back from any process with ``n3.run(id)``.

        Raises:
            SpecError: the spec or the context is invalid (nothing was published).
            CompileError: a target is unknown or a field is not supported (nothing was published).
            BrokerUnavailable: the broker cannot be reached (nothing was published or recorded).
        """
        # A large plan is many short-lived objects (see gc_pause.py); an eager dispatch runs the steps here,
        # and they keep the collector on.
        with nullcontext() if self.app.conf.task_always_eager else collection_paused():
            return self.publish(self.plan(spec, workflow), context)

    def publish(self, plan: Plan, context: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> RunHandle:
        """Record and publish a plan made by ``plan()``: the second half of ``dispatch``.

        For callers that check a spec at once and publish it later under an id they
        reserved (``integrations.django.dispatch_on_commit`` publishes when the
        transaction commits).

        Args:
            plan: what ``plan()`` returned.
            context: JSON data every step receives as its ``context``.
            run_id: the run's id, new and unique (``uuid.uuid4().hex``); ``None`` makes one.

        Returns:
            The run's handle.

        Raises:
            SpecError: the context is not JSON data (nothing was published).
            BrokerUnavailable: the broker cannot be reached (nothing was published or recorded).
        """
        initial = check_context(context)
        run_id = run_id or uuid.uuid4().hex
        with span("n3.dispatch", run_id=run_id, workflow=plan.name, kind=plan.kind):
            return publish_run(self, plan, initial, run_id)

    def plan(self, spec: SpecSource, workflow: str | None = None) -> Plan:
        """The checked plan of ``spec``: what ``dispatch`` would run, without publishing anything."""
        return checked_plan(self, spec, workflow)

    def run(self, run_id: str) -> RunHandle:
        """The handle of a run dispatched from any process.

        Raises:
            UnknownRun: no such run (never dispatched, or expired).
        """
        if self.store.run_record(run_id) is None:
            raise UnknownRun(run_id)
        return run_handle(self, run_id)

    def close(self) -> None:
        """Stop the embedded worker, if one was started, and close the coordination and event stores'
        connections."""
        if self.embedded_worker is not None:
            self.embedded_worker.stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.events.close()


def install(app: Celery, *, settings: Settings | None = None) -> Namel3ssCelery:
    """Install namel3ss-celery on ``app`` (the same as ``Namel3ssCelery(app)``); returns the existing one if any."""
    existing = getattr(app, "namel3ss", None)
    if isinstance(existing, Namel3ssCelery):
        return existing
    return Namel3ssCelery(app, settings=settings)
