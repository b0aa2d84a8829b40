"""The Celery tasks of events: ``n3.events.match`` (an event against this worker's triggers) and
``n3.events.fire`` (a delayed trigger's run)."""

from __future__ import annotations

from typing import Any

from .model import Event
from .service import FIRE_TASK, MATCH_TASK, EventService


def register_event_tasks(app: Any, service: EventService) -> None:
    @app.task(name=MATCH_TASK, shared=False, ignore_result=True)
    def match_event(event: dict[str, Any]) -> list[str]:
        return service.match(Event.from_dict(event))

    @app.task(name=FIRE_TASK, shared=False, ignore_result=True)
    def fire_trigger(name: str, context: dict[str, Any]) -> str | None:
        program = service.program()
        return service.start(program, name, context) if program is not None else None
