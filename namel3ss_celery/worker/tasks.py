"""The adapter's Celery tasks: the step task of each target, the launch, chord settle and its errback, deadlines.

Each task is a thin shell around the engine's ``Conductor`` or, for steps, ``StepHandler``
(``step_task.py``), which do the work.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ..engine.conductor import Conductor
from ..registry import (
    LAUNCH_TASK,
    SETTLE_CHORD_FAILED_TASK,
    SETTLE_CHORD_TASK,
    SETTLE_DEADLINE_TASK,
    SHARED,
    Registry,
    StepDef,
)
from ..tracing import span
from .accepting import step_request_class
from .step_task import StepHandler


def register_adapter_tasks(app: Any, conductor: Conductor) -> None:
    """Register ``n3.run.launch``, ``n3.settle.chord``, its errback ``n3.settle.chord_failed`` and ``n3.settle.deadline``."""

    # Acknowledged late: a worker that dies before it claimed the run's roots leaves the launch to the broker,
    # which delivers it again. Once claimed, a launch that dies half way is finished by the watchdog of any
    # worker when its lease runs out (engine.leases).
    @app.task(name=LAUNCH_TASK, shared=False, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
    def launch_run(run_id: str) -> None:
        with span("n3.launch", run_id=run_id):
            conductor.launch_roots(run_id)

    @app.task(name=SETTLE_CHORD_TASK, shared=False, ignore_result=True)
    def settle_chord(run_id: str, node: str) -> None:
        conductor.settle_node(run_id, node)

    @app.task(name=SETTLE_CHORD_FAILED_TASK, shared=False, ignore_result=True)
    def settle_chord_failed(request: Any, exc: Any, traceback: Any, run_id: str, node: str) -> None:
        conductor.settle_node(run_id, node)

    @app.task(name=SETTLE_DEADLINE_TASK, shared=False, ignore_result=True)
    def settle_deadline(run_id: str, node: str) -> None:
        # Its arguments are not trusted: only blocks whose recorded deadline has passed are decided.
        conductor.enforce_deadlines()


def step_task_class(app: Any, conductor: Conductor) -> type:
    """The app's own task class (Django's, Flask's, the user's), plus the follow-up of each step."""

    class Namel3ssStepTask(app.Task):  # type: ignore[misc, name-defined]
        Request = step_request_class(app.Task, conductor)  # holds each step before its message is acknowledged

        def after_return(self, *args: Any, **kwargs: Any) -> None:
            super().after_return(*args, **kwargs)
            follow_up = getattr(self.request, "n3_after", None)
            self.request.n3_after = None
            conductor.follow_up(follow_up)

    return Namel3ssStepTask


def register_step_task(app: Any, steps: StepHandler, base: type, definition: StepDef) -> None:
    """Register ``n3.step.<target>`` on ``app``; results are always kept.

    A chord's join reads them; and after a lost worker process Celery looks for a stored success
    before it calls the step failed (or, under late ack, delivers it again).

    A step that fails under late ack is rejected rather than acknowledged (``acks_on_failure=False``): with
    no dead-letter exchange that is the same (the message is dropped); with one, RabbitMQ dead-letters it.
    """

    def run(task: Any, payload: Any) -> Any:
        return steps.run(task, definition, payload)

    run.__doc__ = definition.function.__doc__
    app.task(name=definition.task_name, base=base, bind=True, shared=False, ignore_result=False, acks_on_failure=False)(
        run
    )


class StepTasks:
    """The step tasks of one app: one ``n3.step.<target>`` per step its registry (and the shared one) knows,
    registered now and as new steps are added (``Registry.listeners``, held weakly: a closed app's
    tasks stop following)."""

    def __init__(self, app: Any, steps: StepHandler, conductor: Conductor, registry: Registry) -> None:
        self.app = app
        self.steps = steps
        self.base = step_task_class(app, conductor)
        self._registered: set[str] = set()
        for definition in registry.steps():
            self.register(definition)
        listener = _weak_listener(self)
        registry.listeners.append(listener)
        SHARED.listeners.append(listener)

    def register(self, definition: StepDef) -> None:
        """``n3.step.<target>`` for ``definition``, once."""
        if definition.task_name not in self._registered:
            self._registered.add(definition.task_name)
            register_step_task(self.app, self.steps, self.base, definition)


def _weak_listener(tasks: StepTasks) -> Callable[[StepDef], None]:
    ref = weakref.ref(tasks)

    def listener(definition: StepDef) -> None:
        target = ref()
        if target is not None:
            target.register(definition)

    return listener
