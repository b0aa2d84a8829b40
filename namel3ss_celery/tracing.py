"""namel3ss-celery's own spans, through the OpenTelemetry API: no-ops until an SDK is configured.

``n3.dispatch`` (recording and publishing a run), ``n3.launch`` (a worker publishing a run's first steps),
``n3.step`` (one step on a worker, with its ``namel3ss.outcome``) and ``n3.settle`` (deciding a block), with
the attributes ``namel3ss.run_id``, ``namel3ss.workflow``, ``namel3ss.node``, ``namel3ss.block``,
``namel3ss.strategy``, ``namel3ss.step``, ``namel3ss.target`` and ``namel3ss.outcome``. A retry is a span
event on its step's span; a cancel and a deadline come from wherever the run is cancelled or the deadline
is enforced (a client, a worker's watchdog), so each is a span of its own, ``n3.cancel`` (its
``namel3ss.run_id``) and ``n3.deadline`` (its ``namel3ss.run_id`` and ``namel3ss.node``), with the span
event of the same name; the ``n3.settle`` spans they lead to have the ``namel3ss.outcome`` ``cancelled`` or
``timeout``. With ``integrations.opentelemetry.instrument(app)``, Celery's own task spans carry the trace
from the process that dispatched to every worker, so one trace holds the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

TRACER = trace.get_tracer("namel3ss_celery")


def attributes(values: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """``{"run_id": x}`` as ``{"namel3ss.run_id": x}``, leaving out what is unknown (``None``)."""
    return {
        f"namel3ss.{key}": value if isinstance(value, (int, float, bool)) else str(value)
        for key, value in values.items()
        if value is not None
    }


def configured() -> bool:
    """Whether an SDK's tracer provider is set (until then every span is a no-op, and is skipped here)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def span(name: str, **values: Any) -> Iterator[trace.Span]:
    """A span of ours, current inside the block (an exception is recorded on it, and raised on); nothing at
    all while no SDK is configured (a step pays no tracing cost then)."""
    if not configured():
        yield trace.INVALID_SPAN
        return
    with TRACER.start_as_current_span(name, attributes=attributes(values)) as current:
        yield current


def recording() -> bool:
    """Whether the current span records (an SDK is configured): worth a look to say more."""
    return bool(trace.get_current_span().is_recording())


def annotate(**values: Any) -> None:
    """Add attributes to the current span (the outcome of a step, once known)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes(values))


OWN_SPAN = frozenset({"cancel", "deadline"})  # events whose caller's current span is not the run's


def event(name: str, **values: Any) -> None:
    """A span event: ``retry`` on the current span (the step's); ``cancel`` and ``deadline`` on a span of
    their own (``n3.cancel``, ``n3.deadline``, in whatever trace is current), carrying ``values``."""
    if name in OWN_SPAN:
        if configured():
            with TRACER.start_as_current_span(f"n3.{name}", attributes=attributes(values)) as own:
                own.add_event(name, attributes(values))
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, attributes(values))
