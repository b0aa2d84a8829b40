"""The Celery tasks of events: ``n3.events.match`` (an event against this worker's triggers and handlers),
``n3.events.fire`` (a delayed trigger's run, once per trigger and event however often it is delivered) and ``n3.events.handle`` (one handler on one event, retried by
its ``retry_policy``, then dead-lettered)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..engine.values import describe
from ..registry import EVENT_HANDLE_TASK
from ..routing.queues import declare_queue
from ..worker.dead_letters import HEADER
from .model import Event, EventType
from .service import MATCH_TASK, EventService
from .triggering import FIRE_TASK

logger = logging.getLogger("namel3ss_celery")


def register_event_tasks(app: Any, service: EventService) -> None:
    # Acknowledged once it has run, and delivered again when its worker is lost mid-way (prefork child or whole
    # worker killed): the triggers and handlers it had not reached act then, and those it had act once
    # (``delivered_again``: claimed in the store), so an event is not lost with the worker that matched it.
    @app.task(name=MATCH_TASK, shared=False, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
    def match_event(event: dict[str, Any]) -> dict[str, str]:
        return service.match(Event.from_dict(event), delivered_again=True)

    @app.task(name=FIRE_TASK, shared=False, ignore_result=True)
    def fire_trigger(name: str, context: dict[str, Any]) -> str | None:
        program = service.program()
        return service.start_delayed(program, name, context) if program is not None else None

    @app.task(name=EVENT_HANDLE_TASK, bind=True, shared=False, ignore_result=True)
    def handle_event(task: Any, name: str, event: dict[str, Any], requeues: int = 0) -> list[str]:
        (handler,) = [h for h in service.handlers() if h.spec.name == name]
        try:
            return service.handle(name, Event.from_dict(event))
        except Exception as exc:
            retries = task.request.retries
            if retries < handler.max_retries:
                raise task.retry(exc=exc, countdown=handler.delay(retries), max_retries=handler.max_retries) from exc
            error = describe(exc)
            logger.error(
                "event handler %s failed on event %s after %d retries: %s", name, event["event_id"], retries, error
            )
            if handler.spec.dead_letter_queue:
                came_from = str((task.request.delivery_info or {}).get("routing_key") or app.conf.task_default_queue)
                app.send_task(
                    EVENT_HANDLE_TASK,
                    args=(name, event, requeues),
                    task_id=task.request.id,
                    queue=declare_queue(handler.spec.dead_letter_queue, {}),
                    headers={HEADER: {"queue": came_from, "error": error, "at": time.time()}},
                    add_to_parent=False,
                    ignore_result=True,
                )
            service.alert(
                EventType.SYSTEM_ALERT,
                {
                    "handler": name,
                    "reason": "handler_failed",
                    "detail": error,
                    "event_id": event["event_id"],
                    "dead_letter_queue": handler.spec.dead_letter_queue,
                },
            )
            raise
