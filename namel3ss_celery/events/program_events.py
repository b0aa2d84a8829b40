"""The program whose triggers and handlers a process matches: loaded once, compiled once, targets planned once.

A process has one (``NAMEL3SS_CELERY_PROGRAM``, or ``n3.events.use_program(...)``): workers match the
events sent to them, and those they announce, against it. A process that emits events knows from it which
``sync`` triggers it waits for, and, with ``match_events: emitter``, matches its events itself when it can
start what the program's triggers name (``starts_here``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..compiler.support import check_program_supported
from ..plan.model import Plan
from ..spec import ProgramSpec, load_program
from .handlers import Handler, compile_handlers
from .matching import Trigger, check_triggers, compile_triggers
from .targets import background_program, program_for
from .watched import ANY_TYPE, WatchedTypes

logger = logging.getLogger("namel3ss_celery")


class ProgramEvents:
    """One process's program, for events.

    Args:
        program_file: the program to load on first use (``NAMEL3SS_CELERY_PROGRAM``), if any.
        plan: ``Namel3ssCelery.plan`` (a trigger's target is planned once, then published per event).
        watched: where the event types this process's program listens to are marked.
    """

    def __init__(self, program_file: str | None, plan: Callable[..., Plan], watched: WatchedTypes) -> None:
        self._file = program_file
        self._made: ProgramSpec | None = None
        self._plan = plan
        self._plans: dict[tuple[int, str, bool], Plan] = {}  # (program, target, background): its checked plan
        self._compiled: tuple[ProgramSpec, list[Trigger], list[Handler]] | None = None
        self._here: tuple[ProgramSpec, bool] | None = None  # the program, and whether its triggers start here
        self._watched = watched
        self._lock = threading.RLock()

    def use(self, program: ProgramSpec | str | Path | Mapping[str, Any]) -> None:
        """Match events against ``program``'s triggers in this process. Its triggers are checked now.

        Raises:
            SpecError: the program, or one of its triggers, is invalid.
        """
        loaded = program if isinstance(program, ProgramSpec) else load_program(program)
        check_program_supported(loaded)
        check_triggers(loaded)
        self._made = loaded
        self._plans.clear()

    def program(self) -> ProgramSpec | None:
        """This process's program, loaded on first use."""
        if self._made is None and self._file:
            self.use(self._file)
        return self._made

    def triggers(self) -> list[Trigger]:
        """The program's event triggers, compiled once (and its event types marked watched)."""
        return self._compiled_program()[0]

    def handlers(self) -> list[Handler]:
        """The program's event handlers, compiled once."""
        return self._compiled_program()[1]

    def _compiled_program(self) -> tuple[list[Trigger], list[Handler]]:
        program = self.program()
        if program is None or not (program.event_triggers or program.event_handlers):
            return [], []
        with self._lock:
            if self._compiled is None or self._compiled[0] is not program:
                triggers, handlers = compile_triggers(program), compile_handlers(program)
                self._compiled = (program, triggers, handlers)
                watched = {str(t.event_type) for t in triggers} | {str(k) for h in handlers for k in h.event_types}
                self._watched.mark(watched | ({ANY_TYPE} if any(not h.event_types for h in handlers) else set()))
            return self._compiled[1], self._compiled[2]

    def starts_here(self) -> bool:
        """Whether every trigger target of the program plans in this process (its steps are known here, its
        step modules import); worked out once per program, and said once when not (its events are then
        matched on the workers)."""
        program = self.program()
        with self._lock:
            if program is not None and (self._here is None or self._here[0] is not program):
                try:
                    for trigger in self.triggers():
                        self.target_plan(program, trigger.spec.trigger_target)
                except Exception as exc:  # noqa: BLE001 - unknown targets, step modules that do not import here, ...
                    logger.info(
                        "this process cannot start a trigger's target (%s): the events it emits or announces are "
                        "matched by the workers that can",
                        exc,
                    )
                    self._here = (program, False)
                else:
                    self._here = (program, True)
            return self._here is not None and self._here[1]

    def target_plan(self, program: ProgramSpec, target: str, background: bool = False) -> Plan:
        """The checked plan of a workflow or block of ``program``, made once per program and target; with
        ``background``, its steps on the lowest priority (``targets.background_program``)."""
        key = (id(program), target, background)
        found = self._plans.get(key)
        if found is None:
            spec, workflow = program_for(program, target)
            found = self._plans[key] = self._plan(background_program(spec) if background else spec, workflow)
        return found
