"""Steps of the events tests: one emits an event from inside a step, as user code does."""

from __future__ import annotations

from typing import Any

from celery import current_task

from namel3ss_celery import step


@step("emit_again")
def emit_again(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Emits ``step["kind"]`` as a custom event: a trigger on it that starts this step again is a loop."""
    event = current_task.app.namel3ss.emit("custom", {"kind": step["kind"]}, source="a step")
    return str(event.event_id)


@step("enrich_event")
def enrich_event(data: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A handler's transform: the event's data, marked with the event's type."""
    return {**data, "value": f"{context['event']['event_type']}:{data.get('size')}"}


@step("explode")
def explode(data: dict[str, Any], context: dict[str, Any]) -> None:
    raise RuntimeError(f"cannot handle {context['event']['event_id']}")
