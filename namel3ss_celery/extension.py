"""``Namel3ssCelery``: install namel3ss-celery on a Celery app, dispatch specs, read runs back."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from celery import Celery, signals
from kombu.exceptions import OperationalError

from .apps import check_backend, check_broker, make_app
from .compiler import SMALL_BLOCK
from .compiler.checks import check_context, check_plan, check_visibility
from .compiler.planning import make_plan
from .compiler.publisher import CeleryPublisher
from .compiler.support import check_program_supported
from .engine.conductor import Conductor
from .engine.ports import CoordinationStore
from .engine.runner import install_log_ids, run_coroutine
from .errors import UnknownRun
from .gc_pause import collection_paused
from .local import LocalExecutor
from .plan import fields
from .plan.model import Plan
from .registry import (
    LAUNCH_TASK,
    SHARED,
    ReducerFunction,
    Registry,
    StepDef,
    StepFunction,
    import_step_modules,
)
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .routing.consumers import idle_queues, node_queues, waiting_queues
from .routing.queues import adapter_queue
from .runs import RunHandle
from .settings import Settings
from .spec import ParallelBlockSpec, ProgramSpec, WorkflowSpec, load_any
from .worker.embedded import EmbeddedWorker
from .worker.pools import PoolService, add_pool_option, serve_placement, serve_pool, use_all_redis_priorities
from .worker.redis_store import RedisStore
from .worker.signals import connect_step_signals
from .worker.step_task import StepHandler
from .worker.store import MemoryStore
from .worker.tasks import register_adapter_tasks, register_step_task, step_task_class
from .worker.watchdog import add_watchdog

logger = logging.getLogger("namel3ss_celery")

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

    Raises:
        ConfigurationError: the app's result backend cannot join (``rpc://``), or
            there is no coordination store (Redis) for a non-memory broker.
    """

    def __init__(self, app: Celery | None = None, *, settings: Settings | None = None) -> None:
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
        self._registered: set[str] = set()
        self._modules_loaded = False
        self.embedded_worker: EmbeddedWorker | None = EmbeddedWorker(app) if self.settings.embedded else None
        self.conductor = Conductor(lambda: self.store, None, self.registry, self.settings.result_expires)
        self.conductor.connect(CeleryPublisher(app, self.conductor))
        self.steps = StepHandler(app, self.conductor)
        register_adapter_tasks(app, self.conductor)
        self._step_base = step_task_class(app, self.conductor)
        for definition in self.registry.steps():
            self._register(definition)
        listener = _weak_listener(self)
        self.registry.listeners.append(listener)
        SHARED.listeners.append(listener)
        signals.import_modules.connect(self._on_import_modules)
        self._signal_handlers = connect_step_signals(app, self.conductor, self.steps)
        install_log_ids()
        add_pool_option(app, self)
        add_watchdog(app, self.conductor)
        serve_placement(app, self)
        if self.settings.pool:
            self.serve(pool=self.settings.pool)
        app.namel3ss = self  # type: ignore[attr-defined]

    # --- registration -------------------------------------------------------

    def step(self, target: str) -> Callable[[StepFunction], StepFunction]:
        """Register a step function (sync or ``async def``) on this app as ``n3.step.<target>``."""

        def decorate(function: StepFunction) -> StepFunction:
            self.registry.add_step(target, function)
            return function

        return decorate

    def reducer(self, name: str) -> Callable[[ReducerFunction], ReducerFunction]:
        """Register a map_reduce reducer ``(results: list) -> value`` on this app."""

        def decorate(function: ReducerFunction) -> ReducerFunction:
            self.registry.add_reducer(name, function)
            return function

        return decorate

    def load_step_modules(self) -> None:
        """Import ``NAMEL3SS_CELERY_STEP_MODULES`` once and register their functions as ``module:function``."""
        if not self._modules_loaded:
            import_step_modules(self.settings.step_modules, self.registry)
            self._modules_loaded = True

    def _register(self, definition: StepDef) -> None:
        if definition.task_name not in self._registered:
            self._registered.add(definition.task_name)
            register_step_task(self.app, self.steps, self._step_base, definition)

    def _on_import_modules(self, sender: Any = None, **_: Any) -> None:
        if sender is self.app:
            self.load_step_modules()

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
                    url = self._coordination_url
                    self._store = MemoryStore() if url.startswith("memory://") else RedisStore(url)
        return self._store

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
        if self.app.conf.task_always_eager:
            return self._run_eagerly(plan, initial, run_id)
        if self.embedded_worker is not None:
            self.embedded_worker.start()
        else:
            check_broker(self.app)  # an unreachable broker is this call's error, before anything is recorded
        record = {
            fields.KIND: plan.kind,
            fields.NAME: plan.name,
            fields.PLAN: plan.to_json(),
            fields.CONTEXT: json.dumps(initial),
            fields.QUEUES: json.dumps(node_queues(self.app, plan)),
            fields.STATUS: str(RunStatus.RUNNING),
            fields.CREATED: repr(time.time()),
        }
        roots = [n for n in plan.nodes if not n.depends_on]
        if sum(len(n.block.steps) for n in roots) <= SMALL_BLOCK and not any(n.block.fan_out for n in roots):
            # A small run (its first blocks have at most SMALL_BLOCK steps): publishing its few steps here
            # costs less than a hop through a worker. Nobody
            # else knows the run yet, so its roots are claimed (and not cancelled) as the record is written.
            record.update({fields.launched(n.name): "1" for n in roots})
            self.store.create_run(run_id, record, self.settings.result_expires)
            self.conductor.launch(run_id, plan, roots, record, {}, cancelled={n.name: None for n in roots})
        else:
            # One small message; a worker publishes the steps, so a web request never waits for them.
            self.store.create_run(run_id, record, self.settings.result_expires)
            queue = adapter_queue(roots[0].block, plan.pools)  # pool workers take it where nobody else runs
            try:
                self.app.signature(LAUNCH_TASK, args=(run_id,)).apply_async(
                    ignore_result=True, **({"queue": queue} if queue else {})
                )
            except (OperationalError, *self.app.connection_for_write().connection_errors):
                # The broker went away since check_broker: publish the roots from here, as for a small run; if
                # that fails too, they end failed, naming the error. The run never waits for a lost launch.
                logger.exception("publishing the launch of run %s failed; launching it from here", run_id)
                launched = {fields.launched(n.name): "1" for n in roots}
                self.store.set_fields(run_id, launched)
                record.update(launched)
                self.conductor.launch(run_id, plan, roots, record, {})
        return self._handle(run_id)

    def _run_eagerly(self, plan: Plan, context: dict[str, Any], run_id: str) -> RunHandle:
        """``task_always_eager`` (a user's test suite): run in this process, as Celery runs eager tasks."""
        executor = LocalExecutor(
            self.registry, step_modules=self.settings.step_modules, ttl=self.settings.result_expires
        )
        result = run_coroutine(executor.run(plan, context))
        record = {
            fields.KIND: plan.kind,
            fields.NAME: plan.name,
            fields.STATUS: str(RunStatus.RUNNING),
            fields.CREATED: repr(time.time()),
        }
        self.store.create_run(run_id, record, self.settings.result_expires)
        final = {fields.STATUS: str(result.overall_status), fields.RESULT: json.dumps(result.to_dict())}
        self.store.finish(run_id, final, self.settings.result_expires)
        return self._handle(run_id)

    def plan(self, spec: SpecSource, workflow: str | None = None) -> Plan:
        """The checked plan of ``spec``: what ``dispatch`` would run, without publishing anything."""
        loaded = load_any(spec)
        if isinstance(loaded, ProgramSpec):
            check_program_supported(loaded)
        plan = make_plan(loaded, workflow)
        self.load_step_modules()
        check_plan(plan, self.registry, self.settings.step_modules)  # computes the plan's JSON, which dispatch stores
        check_visibility(plan, str(self.app.conf.broker_url or ""))
        return plan

    def run(self, run_id: str) -> RunHandle:
        """The handle of a run dispatched from any process.

        Raises:
            UnknownRun: no such run (never dispatched, or expired).
        """
        if self.store.run_record(run_id) is None:
            raise UnknownRun(run_id)
        return self._handle(run_id)

    def _handle(self, run_id: str) -> RunHandle:
        return RunHandle(lambda: self.store, self.conductor.cancel, run_id, self._idle_queues)

    def _idle_queues(self, run_id: str) -> dict[str, list[str]]:
        """The queues a running run waits on that no worker consumes (``RunHandle.idle_queues``)."""
        record = self.store.run_record(run_id)
        if record is None or record.get(fields.STATUS) != RunStatus.RUNNING or fields.QUEUES not in record:
            return {}
        waiting = waiting_queues(json.loads(record[fields.QUEUES]), Plan.from_json(record[fields.PLAN]), record)
        return {queue: waiting[queue] for queue in idle_queues(self.app, waiting)}

    def close(self) -> None:
        """Stop the embedded worker, if one was started, and close the coordination store's connections."""
        if self.embedded_worker is not None:
            self.embedded_worker.stop()
        if self._store is not None:
            self._store.close()
            self._store = None


def install(app: Celery, *, settings: Settings | None = None) -> Namel3ssCelery:
    """Install namel3ss-celery on ``app`` (the same as ``Namel3ssCelery(app)``); returns the existing one if any."""
    existing = getattr(app, "namel3ss", None)
    if isinstance(existing, Namel3ssCelery):
        return existing
    return Namel3ssCelery(app, settings=settings)


def _weak_listener(n3: Namel3ssCelery) -> Callable[[StepDef], None]:
    ref = weakref.ref(n3)

    def listener(definition: StepDef) -> None:
        target = ref()
        if target is not None:
            target._register(definition)

    return listener
