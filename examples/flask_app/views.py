"""``POST /runs`` dispatches a block or workflow and returns its id at once (503 while the broker cannot be
reached); ``GET /runs/<id>`` reads it; ``POST /events`` emits an event (the workers start what the program's
triggers name for it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, request

from namel3ss_celery.errors import BrokerUnavailable, CompileError, SpecError, UnknownRun

from .extensions import namel3ss

runs = Blueprint("runs", __name__)

RESULT_WAIT = 5.0  # seconds to read a run that has already ended


@runs.post("/runs")
def start_run() -> tuple[dict[str, Any], int]:
    """Body: ``{"spec": <block or workflow>, "context": {...}}``. Answers 202 ``{"run_id": ...}``; 400 for a
    bad spec; 503 when the broker cannot be reached (nothing was published or recorded: send it again later)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        return {"error": 'send JSON {"spec": {...}, "context": {...}}'}, 400
    try:
        run = namel3ss.n3.dispatch(body["spec"], context=body.get("context") or {})
    except (SpecError, CompileError) as exc:
        return {"error": str(exc), "path": exc.path}, 400
    except BrokerUnavailable as exc:  # its message names the broker, without the password
        return {"error": str(exc)}, 503
    return {"run_id": run.id}, 202


@runs.get("/runs/<run_id>")
def read_run(run_id: str) -> tuple[dict[str, Any], int]:
    """``running`` with each node's progress, or the final status with the result."""
    try:
        run = namel3ss.n3.run(run_id)
        status = run.status()
        if status == "running":
            progress = [asdict(node) for node in run.progress()]
            return {"run_id": run_id, "status": str(status), "progress": progress}, 200
        result = run.get(timeout=RESULT_WAIT)
    except UnknownRun:
        return {"error": f"no run {run_id!r}"}, 404
    return {"run_id": run_id, "status": str(result.overall_status), "result": result.to_dict()}, 200


@runs.post("/events")
def emit_event() -> tuple[dict[str, Any], int]:
    """Body: ``{"type": "webhook", "data": {...}}``. Answers 202 ``{"event_id": ...}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return {"error": 'send JSON {"type": "webhook", "data": {...}}'}, 400
    try:
        event = namel3ss.n3.emit(body["type"], body.get("data") or {}, source="flask")
    except SpecError as exc:
        return {"error": str(exc), "path": exc.path}, 400
    return {"event_id": event.event_id}, 202
