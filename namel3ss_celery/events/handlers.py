"""A program's ``event_handlers``: each event of their types is handled on a worker, as its own Celery task
(``n3.events.handle``), so one handler's retries never hold another's.

A handler may ``transform_function`` the event's data (a registered step: it receives the data as its step
and the event as ``context["event"]``, and returns the data to route), then sends it where its
``routing_rules`` say (``{when: <filter expression>, route_to: <target>}``: every rule that matches),
else to ``route_to``. A target is a workflow or block of the program (started with the event in its
context, as a trigger starts it) or a step target (a one-step block whose step is the data). A handler
that fails is retried by its ``retry_policy`` (``max_retries``, default 3; ``retry_delay`` seconds,
default 1; ``backoff`` ``fixed`` or ``exponential``, the default); when the retries are spent it goes to
its ``dead_letter_queue`` (``namel3ss-celery dlq list`` shows it, ``dlq requeue`` runs it again) and a
``system_alert`` event says so. The IR fields this release does not act on (``enrichment_sources``,
``required_capabilities``, ``permission_level``) are refused when set; ``metadata`` and ``description`` are
the program's notes, kept and never read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..compiler.support import refuse_non_defaults
from ..engine.runner import run_coroutine
from ..errors import SpecError, StepResultError, UnknownTarget
from ..registry import Registry
from ..spec import EventHandlerSpec, ProgramSpec
from .filters import Predicate, compile_expression
from .model import Event, EventType, event_type

RETRY_KEYS = {"max_retries", "retry_delay", "backoff"}
BACKOFFS = ("fixed", "exponential")
MAX_RETRY_DELAY = 3600.0

# Handler fields whose behaviour is not built yet: refused when set to anything but the IR default.
HANDLER_NOT_YET: dict[str, Callable[[Any], bool]] = {
    "enrichment_sources": lambda v: v == [],
    "required_capabilities": lambda v: v == [],
    "permission_level": lambda v: v == "read_only",
}


@dataclass(frozen=True)
class Route:
    when: Predicate | None  # None: always (route_to)
    target: str


@dataclass(frozen=True)
class Handler:
    """One compiled event handler of a program."""

    spec: EventHandlerSpec
    path: str
    event_types: frozenset[EventType]  # empty: every type
    routes: tuple[Route, ...]
    max_retries: int
    retry_delay: float
    exponential: bool

    def handles(self, kind: str) -> bool:
        return not self.event_types or kind in self.event_types

    def targets(self, event: Mapping[str, Any]) -> list[str]:
        """Where ``event`` goes: every routing rule that matches, else ``route_to``."""
        ruled = [r.target for r in self.routes if r.when is not None and r.when(event)]
        return ruled or [r.target for r in self.routes if r.when is None]

    def transform(self, event: Event, registry: Registry) -> dict[str, Any]:
        """The event's data through the handler's ``transform_function`` (a registered step, called with the
        data and ``{"event": ...}``), or as it is when it has none.

        Raises:
            UnknownTarget: the transform is not a registered step.
            StepResultError: it returned something other than a mapping.
            Exception: whatever the transform raised.
        """
        name, function = self.spec.name, self.spec.transform_function
        if not function:
            return dict(event.data)
        definition = registry.step(function)
        if definition is None:
            raise UnknownTarget(f"handler {name!r}: transform_function {function!r} is not a registered step")
        data = definition.function(dict(event.data), {"event": event.to_dict()})
        if asyncio.iscoroutine(data):
            data = run_coroutine(data)
        if not isinstance(data, Mapping):
            raise StepResultError(f"handler {name!r}: its transform returned {type(data).__name__}, not a mapping")
        return dict(data)

    def delay(self, retries: int) -> float:
        """Seconds before retry number ``retries + 1``."""
        return min(self.retry_delay * (2**retries if self.exponential else 1), MAX_RETRY_DELAY)


def compile_handlers(program: ProgramSpec) -> list[Handler]:
    """The program's event handlers, checked.

    Raises:
        SpecError: naming the handler's field: an unknown event type, a handler with nowhere to route, a
            bad routing rule or expression, a target the program does not have (for workflows and blocks;
            step targets are checked by the worker that runs them), a bad retry_policy.
        NotSupportedYet: naming a field this release does not act on, set to other than its default.
    """
    handlers = []
    for index, spec in enumerate(program.event_handlers):
        path = f"event_handlers[{index}]"
        refuse_non_defaults(spec, HANDLER_NOT_YET, path)
        kinds = []
        for n, kind in enumerate(spec.event_types):
            try:
                kinds.append(event_type(kind))
            except SpecError as exc:
                raise SpecError(str(exc).split(": ", 1)[-1], path=f"{path}.event_types[{n}]") from exc
        routes = [Route(None, spec.route_to)] if spec.route_to else []
        for n, rule in enumerate(spec.routing_rules):
            where = f"{path}.routing_rules[{n}]"
            if set(rule) - {"when", "route_to"} or not isinstance(rule.get("route_to"), str) or not rule["route_to"]:
                raise SpecError("a routing rule is {when: <filter expression>, route_to: <target>}", path=where)
            when = rule.get("when")
            routes.append(Route(compile_expression(str(when), f"{where}.when") if when else None, rule["route_to"]))
        if not routes:
            raise SpecError("a handler routes somewhere: give route_to or routing_rules", path=f"{path}.route_to")
        policy = dict(spec.retry_policy)
        unknown = set(policy) - RETRY_KEYS
        if unknown:
            raise SpecError(
                f"unknown retry_policy keys {sorted(unknown)}; known: {sorted(RETRY_KEYS)}", path=f"{path}.retry_policy"
            )
        try:
            retries = int(policy.get("max_retries", 3))
            delay = float(policy.get("retry_delay", 1.0))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"retry_policy: {exc}", path=f"{path}.retry_policy") from exc
        backoff = policy.get("backoff", "exponential")
        if retries < 0 or not 0 <= delay <= MAX_RETRY_DELAY or backoff not in BACKOFFS:
            raise SpecError(
                f"retry_policy: max_retries >= 0, retry_delay 0..{MAX_RETRY_DELAY:g} seconds, backoff one of "
                f"{', '.join(BACKOFFS)}; not {policy}",
                path=f"{path}.retry_policy",
            )
        handlers.append(Handler(spec, path, frozenset(kinds), tuple(routes), retries, delay, backoff == "exponential"))
    return handlers


def dead_letter_queues(program: ProgramSpec) -> list[str]:
    """The dead-letter queues of the program's event handlers (``namel3ss-celery dlq`` reads them)."""
    return sorted({h.dead_letter_queue for h in program.event_handlers if h.dead_letter_queue})
