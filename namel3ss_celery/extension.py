"""``Namel3ssCelery``: install namel3ss-celery on a Celery app, dispatch specs, read runs back."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from billiard.exceptions import WorkerLostError
from celery import Celery, bootsteps, signals
from celery.exceptions import TimeLimitExceeded

from .compiler import check_plan
from .compiler.support import check_program_supported
from .conductor import Conductor
from .embedded import EmbeddedWorker
from .errors import ConfigurationError, RoutingError, SpecError, StepResultError, UnknownRun, WaitTimeout
from .local import LocalExecutor
from .registry import (
    LAUNCH_TASK,
    SHARED,
    STEP_TASK_PREFIX,
    ReducerFunction,
    Registry,
    StepDef,
    StepFunction,
    import_step_modules,
)
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .routing.autoscale import autoscaler_setting
from .routing.policy import delivery_options
from .routing.queues import REDIS_PRIORITY_STEPS, pool_queues, task_queue_of, transport_options
from .routing.workers import find_pool
from .settings import EMBEDDED_BACKEND, EMBEDDED_BROKER, Settings
from .spec import ParallelBlockSpec, ProgramSpec, ScalingMetric, WorkflowSpec, load_any, load_program
from .spec.load import to_data
from .tasks import register_adapter_tasks, register_step_task, step_task_class
from .worker.plan import Plan, final_result, make_plan
from .worker.redis_store import RedisStore
from .worker.runner import install_log_ids, run_coroutine, to_json_data
from .worker.store import CoordinationStore, MemoryStore

SpecSource = ParallelBlockSpec | WorkflowSpec | ProgramSpec | Mapping[str, Any] | str | Path
RunResult = ParallelExecutionResult | WorkflowResult

DEFAULT_WAIT = 300.0
INLINE_STEPS = 8  # runs whose first blocks have at most this many steps are published by dispatch itself


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``: their broker and backend, or the embedded default."""
    app = Celery("namel3ss_celery", set_as_current=False)
    if settings.embedded:
        app.conf.update(
            broker_url=EMBEDDED_BROKER,
            result_backend=EMBEDDED_BACKEND,
            # The memory transport polls; its default of 1s per empty poll makes every hop slow.
            broker_transport_options={"polling_interval": 0.005},
        )
    else:
        app.conf.update(broker_url=settings.broker_url, result_backend=settings.result_backend)
    app.conf.update(result_expires=settings.result_expires, task_serializer="json", accept_content=["json"])
    return app


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
        _check_backend(app)
        _use_all_redis_priorities(app)
        self._coordination_url = self.settings.coordination()
        self.registry = Registry(parent=SHARED)
        self._store: CoordinationStore | None = None
        self._eager_store = MemoryStore()
        self.pool_queue: str | None = None
        self._store_lock = threading.Lock()
        self._registered: set[str] = set()
        self._modules_loaded = False
        self.embedded_worker: EmbeddedWorker | None = EmbeddedWorker(app) if self.settings.embedded else None
        self.conductor = Conductor(app, lambda: self.store, self.registry, self.settings.result_expires)
        register_adapter_tasks(app, self.conductor)
        self._step_base = step_task_class(app, self.conductor)
        for definition in self.registry.steps():
            self._register(definition)
        listener = _weak_listener(self)
        self.registry.listeners.append(listener)
        SHARED.listeners.append(listener)
        signals.import_modules.connect(self._on_import_modules)
        signals.task_unknown.connect(self._on_task_unknown)
        signals.worker_process_init.connect(self._on_process_init)
        signals.task_failure.connect(self._on_task_failure)
        signals.task_revoked.connect(self._on_task_revoked)
        install_log_ids()
        _add_pool_option(app, self)
        if self.settings.pool:
            self._serve_pool(self.settings.pool)
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
            register_step_task(self.app, self.conductor, self._step_base, definition)

    def _on_import_modules(self, sender: Any = None, **_: Any) -> None:
        if sender is self.app:
            self.load_step_modules()

    def _serve_pool(self, name: str) -> None:
        """This process is a worker of pool ``name`` (of ``NAMEL3SS_CELERY_PROGRAM``): enforce its allowed_tools.

        Raises:
            ConfigurationError: no program is set, or it has no such pool.
        """
        if not self.settings.program:
            raise ConfigurationError(
                "NAMEL3SS_CELERY_POOL is set but NAMEL3SS_CELERY_PROGRAM is not", setting="NAMEL3SS_CELERY_PROGRAM"
            )
        try:
            program = load_program(self.settings.program)
            pool = find_pool(program, name)
        except RoutingError as exc:
            raise ConfigurationError(str(exc), setting="NAMEL3SS_CELERY_POOL") from exc
        for queue in pool_queues(program):  # declared with their arguments (priorities) before the worker consumes
            if queue.name == pool.queue_name and queue.name not in self.app.amqp.queues:
                self.app.amqp.queues.add(queue)
        if pool.auto_scaling and pool.scaling_metric == ScalingMetric.QUEUE_DEPTH:
            # With --autoscale, grow and shrink by the depth of the pool's queue, not Celery's own rule.
            self.app.conf.worker_autoscaler = autoscaler_setting()
            os.environ.setdefault("NAMEL3SS_CELERY_POOL", pool.name)
            os.environ.setdefault("NAMEL3SS_CELERY_PROGRAM", os.path.abspath(self.settings.program))
        contract = task_queue_of(program, pool)
        if contract is not None:  # the queue's delivery contract, for this worker's tasks
            delivery = delivery_options(contract)
            self.app.conf.task_acks_late = delivery["acks_late"]
            self.app.conf.task_reject_on_worker_lost = delivery["reject_on_worker_lost"]
        broker = str(self.app.conf.broker_url or "")
        if broker.startswith(("redis://", "rediss://")):  # one visibility timeout for this Redis broker
            options = dict(self.app.conf.broker_transport_options or {})
            visibility = float(transport_options(program, broker)["visibility_timeout"])
            options["visibility_timeout"] = visibility
            # kombu looks for lost (unacknowledged) messages every interval x throttle seconds (100 s by
            # default); look every third of the visibility timeout, at most every 10 s, so they come back soon.
            options.setdefault("unacked_restore_interval", max(1, min(10, int(visibility / 3))))
            options.setdefault("unacked_restore_throttle", 1)
            self.app.conf.broker_transport_options = options
        self.conductor.pool_name = pool.name
        self.conductor.allowed_tools = tuple(pool.allowed_tools)
        self.pool_queue = pool.queue_name

    def _on_process_init(self, **_: Any) -> None:
        self.conductor.pool = "prefork"  # only prefork children send worker_process_init

    def _ours(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app and str(getattr(sender, "name", "")).startswith(
            STEP_TASK_PREFIX
        )

    def _on_task_failure(self, sender: Any = None, task_id: str = "", exception: Any = None, **kw: Any) -> None:
        # Sent by the worker's main process when a step's process was lost or hit its hard time limit:
        # the step never filed an outcome.
        if self._ours(sender) and isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
            args = kw.get("args") or ()
            reason = f"{type(exception).__name__}: {exception}"
            self.conductor.file_lost(args[0] if args else None, task_id, reason)

    def _on_task_revoked(self, sender: Any = None, request: Any = None, **kw: Any) -> None:
        # Revoked by hand (Flower, control.revoke), or expired at a block deadline, before or while running.
        if self._ours(sender) and request is not None:
            args = getattr(request, "args", None) or ()
            how = "expired" if kw.get("expired") else ("terminated" if kw.get("terminated") else "revoked")
            started = "stopped" if kw.get("terminated") else "not_started"
            self.conductor.file_lost(args[0] if args else None, str(request.id), f"{how} before it finished", started)

    def _on_task_unknown(self, sender: Any = None, name: str = "", id: str = "", message: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is self.app and name.startswith(STEP_TASK_PREFIX) and message is not None:
            self.conductor.refuse_unknown(name, id, message)

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
        """
        plan = self.plan(spec, workflow)
        try:
            initial = to_json_data(dict(context or {}), "context")
        except StepResultError as exc:
            raise SpecError(str(exc), path="context") from None
        if self.app.conf.task_always_eager:
            return self._run_eagerly(plan, initial)
        if self.embedded_worker is not None:
            self.embedded_worker.start()
        run_id = uuid.uuid4().hex
        record = {
            "kind": plan.kind,
            "name": plan.name,
            "plan": plan.to_json(),
            "context": json.dumps(initial),
            "status": str(RunStatus.RUNNING),
            "created": repr(time.time()),
        }
        self.store.create_run(run_id, record, self.settings.result_expires)
        roots = [n.block for n in plan.nodes if not n.depends_on]
        if sum(len(b.steps) for b in roots) <= INLINE_STEPS and not any(b.fan_out for b in roots):
            # A small run: publishing its few steps here costs less than a hop through a worker.
            self.conductor.launch_roots(run_id, plan, record)
        else:
            # One small message; a worker publishes the steps, so a web request never waits for them.
            self.app.signature(LAUNCH_TASK, args=(run_id,)).apply_async(ignore_result=True)
        return RunHandle(self, run_id)

    def _run_eagerly(self, plan: Plan, context: dict[str, Any]) -> RunHandle:
        """``task_always_eager`` (a user's test suite): run in this process, as Celery runs eager tasks."""
        executor = LocalExecutor(
            self.registry, step_modules=self.settings.step_modules, ttl=self.settings.result_expires
        )
        result = run_coroutine(executor.run(plan, context))
        run_id = uuid.uuid4().hex
        record = {"kind": plan.kind, "name": plan.name, "status": str(RunStatus.RUNNING), "created": repr(time.time())}
        self.store.create_run(run_id, record, self.settings.result_expires)
        final = {"status": str(result.overall_status), "result": json.dumps(result.to_dict())}
        self.store.finish(run_id, final, self.settings.result_expires)
        return RunHandle(self, run_id)

    def plan(self, spec: SpecSource, workflow: str | None = None) -> Plan:
        """The checked plan of ``spec``: what ``dispatch`` would run, without publishing anything."""
        loaded = load_any(spec if not isinstance(spec, Mapping) else to_data(spec))
        if isinstance(loaded, ProgramSpec):
            check_program_supported(loaded)
        plan = make_plan(loaded, workflow)
        self.load_step_modules()
        check_plan(plan, self.registry, self.settings.step_modules)
        for node in plan.nodes:
            for index, step in enumerate(node.block.steps):
                try:
                    to_json_data(step.payload(), f"step {index} of {node.name!r}")
                except StepResultError as exc:
                    raise SpecError(
                        str(exc).replace("returned", "carries"), path=f"{node.name}.steps[{index}]"
                    ) from None
        return plan

    def run(self, run_id: str) -> RunHandle:
        """The handle of a run dispatched from any process.

        Raises:
            UnknownRun: no such run (never dispatched, or expired).
        """
        if self.store.run_record(run_id) is None:
            raise UnknownRun(run_id)
        return RunHandle(self, run_id)

    def close(self) -> None:
        """Stop the embedded worker, if one was started, and close the coordination store's connections."""
        if self.embedded_worker is not None:
            self.embedded_worker.stop()
        if self._store is not None:
            self._store.close()
            self._store = None


@dataclass(frozen=True)
class NodeProgress:
    """One node of a running run: ``done`` of ``total`` steps reported, and its ``state``."""

    node: str
    done: int
    total: int
    state: str


class RunHandle:
    """A dispatched run, read back from the coordination store."""

    def __init__(self, n3: Namel3ssCelery, run_id: str) -> None:
        self._n3 = n3
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def _record(self) -> dict[str, str]:
        record = self._n3.store.run_record(self.id)
        if record is None:
            raise UnknownRun(self.id)
        return record

    def status(self) -> RunStatus:
        """``running`` until the run ends, then its final status."""
        return RunStatus(self._record()["status"])

    def get(self, timeout: float = DEFAULT_WAIT) -> RunResult:
        """Wait for the run to end and return its result, whatever its final status.

        Raises:
            WaitTimeout: the run did not end within ``timeout`` seconds (it goes on).
            UnknownRun: no such run.
        """
        if not self._n3.store.wait(self.id, timeout):
            raise WaitTimeout(self.id, timeout, str(self.status()))  # status() raises UnknownRun for no run
        result = final_result(self._record())
        if result is None:
            raise UnknownRun(self.id)
        return result

    def progress(self) -> list[NodeProgress]:
        """Each node of the run, in plan order: steps reported of total, and its state.

        A node's state is ``waiting`` (not launched), ``running``, or its final status.
        """
        record = self._record()
        plan = Plan.from_json(record["plan"])
        counts = self._n3.store.step_counts(self.id, [n.name for n in plan.nodes])
        rows = []
        for node in plan.nodes:
            expanded = record.get(f"node:{node.name}:block")
            total = len(json.loads(expanded)["steps"]) if expanded else len(node.block.steps)
            state = "waiting"
            if f"node:{node.name}:result" in record:
                state = json.loads(record[f"node:{node.name}:result"])["overall_status"]
            elif f"node:{node.name}:launched" in record:
                state = "running"
            rows.append(NodeProgress(node.name, min(counts.get(node.name, 0), total), total, state))
        return rows

    def cancel(self) -> None:
        """Cancel the run from any process: its running blocks end as ``cancelled``.

        Queued steps never start; running ones are asked to stop (``cancelled()``,
        async steps are cancelled); the run's result keeps what had completed.
        A run that already ended is left as it is.
        """
        if self._record().get("done") != "1":
            self._n3.conductor.cancel(self.id)

    async def aget(self, timeout: float = DEFAULT_WAIT) -> RunResult:
        """``get`` for asyncio code; the wait runs in a thread, the event loop stays free."""
        return await asyncio.to_thread(self.get, timeout)


def install(app: Celery, *, settings: Settings | None = None) -> Namel3ssCelery:
    """Install namel3ss-celery on ``app`` (the same as ``Namel3ssCelery(app)``); returns the existing one if any."""
    existing = getattr(app, "namel3ss", None)
    if isinstance(existing, Namel3ssCelery):
        return existing
    return Namel3ssCelery(app, settings=settings)


def _add_pool_option(app: Celery, n3: Namel3ssCelery) -> None:
    """``celery -A APP worker --n3-pool NAME``: serve one worker pool of ``NAMEL3SS_CELERY_PROGRAM``.

    The worker consumes that pool's queue (besides any ``-Q``) and enforces its ``allowed_tools``.
    """

    class ServePool(bootsteps.Step):  # type: ignore[misc]
        name = "namel3ss_celery.ServePool"

        def __init__(self, parent: Any, n3_pool: str | None = None, **kwargs: Any) -> None:
            if n3_pool:
                n3.settings = replace(n3.settings, pool=n3_pool)
                n3._serve_pool(n3_pool)
                parent.app.amqp.queues.select([n3.pool_queue])
            super().__init__(parent, **kwargs)

    app.user_options["worker"].add(
        click.Option(["--n3-pool"], default=None, help="serve this namel3ss worker pool (NAMEL3SS_CELERY_PROGRAM)")
    )
    app.steps["worker"].add(ServePool)


def _use_all_redis_priorities(app: Celery) -> None:
    """On Redis, steps' ``priority`` needs kombu's ten priority lists (kombu serves them in priority order).

    Raises:
        ConfigurationError: the app already sets other ``priority_steps``.
    """
    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        return
    options = dict(app.conf.broker_transport_options or {})
    steps = options.get("priority_steps")
    if steps is not None and list(steps) != list(REDIS_PRIORITY_STEPS):
        raise ConfigurationError(
            f"broker_transport_options['priority_steps'] is {steps!r}; namel3ss-celery maps step priorities onto "
            f"all ten Redis levels {list(REDIS_PRIORITY_STEPS)}: remove it or set that",
            setting="broker_transport_options",
        )
    options.setdefault("priority_steps", list(REDIS_PRIORITY_STEPS))
    app.conf.broker_transport_options = options


def _check_backend(app: Celery) -> None:
    backend = str(app.conf.result_backend or "")
    if backend.startswith("rpc"):
        raise ConfigurationError(
            f"result_backend {backend!r} cannot join chords or be read from another process; "
            "set CELERY_RESULT_BACKEND (result_backend) to redis:// or another store",
            setting="result_backend",
        )


def _weak_listener(n3: Namel3ssCelery) -> Callable[[StepDef], None]:
    ref = weakref.ref(n3)

    def listener(definition: StepDef) -> None:
        target = ref()
        if target is not None:
            target._register(definition)

    return listener
