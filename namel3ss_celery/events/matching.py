"""A program's event triggers, compiled when it loads, and which of them an event starts.

Each trigger's ``event_type``, ``filter_fields`` and ``filter_expression`` are checked and compiled once;
a bad one fails the load naming its field (and, for an expression, the position). Schedules
(``event_type: schedule``) are beat's, not matched here. The IR fields this release does not act on
(``required_capabilities``, ``permission_level``, and keys of ``source_config`` other than ``dedupe_key`` and
``sync_timeout_seconds``) are refused when set, as a block's are; ``metadata`` and ``description`` are the
program's notes, kept and never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..compiler.support import refuse_non_defaults
from ..errors import NotSupportedYet, SpecError
from ..spec import EventTriggerSpec, ProgramSpec
from .execution import SYNC_TIMEOUT, sync_timeout
from .filters import MISSING, Predicate, compile_expression, fields_filter, lookup
from .handlers import compile_handlers
from .model import Event, EventType, event_type
from .schedules import program_schedules
from .targets import check_targets

MAX_DEPTH = 8  # triggered runs in an event's ancestry: deeper is a loop, and is stopped
DEDUPE_KEY = "dedupe_key"  # source_config: the event field whose value deduplicates (default: the event id)

# Trigger fields whose behaviour is not built yet: refused when set to anything but the IR default.
TRIGGER_NOT_YET: dict[str, Callable[[Any], bool]] = {
    "required_capabilities": lambda v: v == [],
    "permission_level": lambda v: v == "read_only",
}


@dataclass(frozen=True)
class Trigger:
    """One compiled trigger of a program."""

    spec: EventTriggerSpec
    path: str  # event_triggers[i]
    event_type: EventType
    filters: tuple[Predicate, ...]
    wait_seconds: float | None = None  # execution_mode sync: how long the emitter waits for the run

    def matches(self, event: Mapping[str, Any]) -> bool:
        return event.get("event_type") == self.event_type and all(f(event) for f in self.filters)

    def dedupe_value(self, event: Mapping[str, Any]) -> str:
        """What makes two events the same for this trigger's ``deduplicate_window``."""
        path = self.spec.source_config.get(DEDUPE_KEY)
        if not path:
            return str(event.get("event_id"))
        found = lookup(event, str(path))
        return "missing" if found is MISSING else repr(found)

    def context(self, event: Event) -> dict[str, Any]:
        """The triggered run's context: ``context_mapping``'s fields (``{context key: event path}``), and the
        event itself as ``trigger_event``."""
        found = event.to_dict()
        context = {key: lookup(found, path) for key, path in self.spec.context_mapping.items()}
        return {key: value for key, value in context.items() if value is not MISSING} | {"trigger_event": found}


def compile_triggers(program: ProgramSpec) -> list[Trigger]:
    """The program's event triggers (not its schedules), checked and compiled.

    Raises:
        SpecError: naming the trigger's field: an unknown event type, a bad expression, an execution_mode
            'sync' where nobody could wait (``execution.sync_timeout``), a context_mapping or dedupe_key that
            is not a field path.
        NotSupportedYet: a ``source_config`` key an event trigger does not read.
    """
    triggers = []
    for index, spec in enumerate(program.event_triggers):
        path = f"event_triggers[{index}]"
        if spec.event_type == EventType.SCHEDULE:
            continue
        try:
            kind = event_type(spec.event_type)
        except SpecError as exc:
            raise SpecError(str(exc).split(": ", 1)[-1], path=f"{path}.event_type") from exc
        unread = sorted(set(spec.source_config) - {DEDUPE_KEY, SYNC_TIMEOUT})
        if unread:
            raise NotSupportedYet(
                f"source_config key {unread[0]!r} is not supported yet; an event trigger reads {DEDUPE_KEY} and "
                f"{SYNC_TIMEOUT}",
                path=f"{path}.source_config.{unread[0]}",
            )
        wait = sync_timeout(spec, kind, path)
        for key, source in spec.context_mapping.items():
            _check_path(source, f"{path}.context_mapping.{key}")
        if spec.source_config.get(DEDUPE_KEY) is not None:
            _check_path(spec.source_config[DEDUPE_KEY], f"{path}.source_config.{DEDUPE_KEY}")
        filters: list[Predicate] = []
        if spec.filter_fields:
            filters.append(fields_filter(spec.filter_fields))
        if spec.filter_expression:
            filters.append(compile_expression(spec.filter_expression, f"{path}.filter_expression"))
        triggers.append(Trigger(spec, path, kind, tuple(filters), wait))
    return triggers


def check_triggers(program: ProgramSpec) -> None:
    """Everything about the program's triggers and handlers that can be checked when it loads: targets,
    schedules (cron, timezone, interval_seconds), types, filters, execution modes, routing rules, retry
    policies, and the fields this release does not act on.

    Raises:
        SpecError: naming the trigger's field.
        NotSupportedYet: naming a field this release does not act on, set to other than its default.
    """
    for index, spec in enumerate(program.event_triggers):
        refuse_non_defaults(spec, TRIGGER_NOT_YET, f"event_triggers[{index}]")
    check_targets(program)
    for index, _schedule in program_schedules(program):
        sync_timeout(program.event_triggers[index], EventType.SCHEDULE, f"event_triggers[{index}]")
    compile_triggers(program)
    compile_handlers(program)


def _check_path(value: object, where: str) -> None:
    if not isinstance(value, str) or not value or any(not part for part in value.split(".")):
        raise SpecError(f"a dotted field path of the event (data.user.id), not {value!r}", path=where)


def matching(triggers: Sequence[Trigger], event: Event) -> list[Trigger]:
    """The triggers ``event`` starts."""
    found = event.to_dict()
    return [trigger for trigger in triggers if trigger.matches(found)]
