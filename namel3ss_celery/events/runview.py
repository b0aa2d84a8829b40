"""The run view: a run drawn from its record (its graph of nodes, each block's progress and steps), as
HTML the events server serves (``/``: recent runs; ``/runs/<run_id>``: one run), self-contained (no CDN,
no build step).

Markup that tests and tooling can rely on: each node is an element with ``data-node`` and ``data-status``;
each step ``data-step``, ``data-status`` (``pending``, ``running`` once it began, then its final status)
and, in a race, ``data-outcome``. While the run is pending or running, the page's script redraws it as its
events arrive (and each second meanwhile), without a reload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ..engine.ports import CoordinationStore
from ..plan import fields
from ..plan.envelope import Envelope
from ..plan.kinds import Outcome
from ..plan.model import Plan
from ..spec import ParallelBlockSpec, step_key
from .model import EventType
from .runview_html import RACING, UNFINISHED, page, render_run, render_runs
from .stream import EventStore


def run_view(store: CoordinationStore, run_id: str) -> dict[str, Any] | None:
    """What the page shows of run ``run_id`` (``None``: no such run, or its record expired)."""
    record = store.run_record(run_id)
    if not record or fields.PLAN not in record:
        return None
    plan = Plan.from_json(record[fields.PLAN])
    depth: dict[str, int] = {}
    for node in plan.nodes:  # plan order: a node comes after what it depends on
        depth[node.name] = 1 + max((depth[d] for d in node.depends_on), default=-1)
    nodes = []
    for node in plan.nodes:
        raw_block = record.get(fields.expanded_block(node.name))
        block = ParallelBlockSpec.model_validate_json(raw_block) if raw_block else node.block
        settled = record.get(fields.node_result(node.name))
        if settled:
            done = json.loads(settled)
            steps = [_step_of_result(r) for r in done["results"]]
            status = done["overall_status"]
        else:
            envelopes = store.step_envelopes(run_id, node.name) if fields.launched(node.name) in record else {}
            steps = [
                _step_of_envelope(step_key(s, i), envelopes.get(i), fields.started(node.name, i) in record)
                for i, s in enumerate(block.steps)
            ]
            status = "running" if fields.launched(node.name) in record else "waiting"
        strategy = str(block.strategy)
        losers = [s for s in steps if s.get("outcome") not in (None, "won")] if strategy in RACING else []
        nodes.append(
            {
                "name": node.name,
                "depends_on": list(node.depends_on),
                "depth": depth[node.name],
                "strategy": strategy,
                "status": status,
                "done": sum(s["status"] in ("completed", "failed", "cancelled") for s in steps),
                "total": len(steps),
                "steps": steps,
                "winner": next((s["name"] for s in steps if s.get("outcome") == "won"), None),
                "loser_seconds": round(sum((s["duration_ms"] or 0) for s in losers) / 1000, 3),
            }
        )
    return {
        "run_id": run_id,
        "name": record.get(fields.NAME, ""),
        "kind": record.get(fields.KIND, ""),
        "status": record.get(fields.STATUS, ""),
        "created": float(record.get(fields.CREATED) or 0),
        "nodes": nodes,
    }


def _step_of_result(result: Mapping[str, Any]) -> dict[str, Any]:
    metadata = result.get("metadata") or {}
    outcome = metadata.get("outcome")
    return {
        "name": result["task_id"],
        "status": result["status"],
        "outcome": outcome,
        "duration_ms": None if outcome == Outcome.NOT_STARTED else result.get("duration_ms"),  # it took no time
        "error": result.get("error"),
    }


def _step_of_envelope(name: str, raw: str | None, started: bool) -> dict[str, Any]:
    if raw is None:  # not reported yet: running once the start guard let it begin
        status = "running" if started else "pending"
        return {"name": name, "status": status, "outcome": None, "duration_ms": None, "error": None}
    env = Envelope.decode(raw)
    took = None  # a step that never started took no time
    if env.outcome != Outcome.NOT_STARTED and env.start is not None and env.end is not None:
        took = (env.end - env.start) * 1000
    outcome = str(env.outcome) if env.outcome is not None else None
    return {"name": name, "status": str(env.status), "outcome": outcome, "duration_ms": took, "error": env.error}


def recent_runs(
    events: EventStore, store: CoordinationStore, limit: int = 50, now: float | None = None
) -> list[dict[str, Any]]:
    """The newest runs the stream announced (``workflow_started``), with their status now and their duration:
    an ended run's from its ``workflow_completed`` event (or, when the stream has not got it, its record's
    result), a running one's so far (``"running": True``)."""
    now = time.time() if now is None else now
    ended: dict[str, Mapping[str, Any]] = {}  # the newest come first: a run's end before its start
    rows: list[dict[str, Any]] = []
    for event in events.newest_events(2000):
        run_id = str(event.data.get("instance_id"))
        if event.event_type == EventType.WORKFLOW_COMPLETED:
            ended[run_id] = event.data
        if event.event_type != EventType.WORKFLOW_STARTED or len(rows) >= limit:
            continue
        (status,) = store.get_fields(run_id, [fields.STATUS])
        status = status or "expired"
        running = status in UNFINISHED
        if run_id in ended:
            duration_ms = ended[run_id].get("duration_ms")
        elif running:
            duration_ms = (now - event.timestamp) * 1000
        else:  # ended, its end event not among those read: the record's result says (unless it expired)
            (result,) = store.get_fields(run_id, [fields.RESULT])
            duration_ms = json.loads(result).get("total_duration_ms") if result else None
        rows.append(
            {
                "run_id": run_id,
                "name": event.data.get("workflow_name"),
                "status": status,
                "started": event.timestamp,
                "duration_ms": None if duration_ms is None else float(duration_ms),
                "running": running and run_id not in ended,
            }
        )
    return rows


def respond(events: EventStore, store: CoordinationStore, path: str, query: Mapping[str, list[str]]) -> tuple[int, str]:
    """The page at ``path``: ``/`` (recent runs) or ``/runs/<run_id>`` (``?fragment=1``: the part that updates);
    (HTTP status, HTML)."""
    if path in ("", "/"):
        return 200, render_runs(recent_runs(events, store))
    if path.startswith("/runs/"):
        view = run_view(store, path.removeprefix("/runs/").strip("/"))
        if view is None:
            return 404, page("unknown run", "<h1>No such run</h1><p>never dispatched here, or its record expired</p>")
        return 200, render_run(view, fragment=query.get("fragment") == ["1"])
    return 404, page(
        "not found", "<h1>Not found</h1><p>pages: <a href='/'>/</a>, /runs/&lt;run_id&gt;; events: /events</p>"
    )
