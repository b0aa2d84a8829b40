"""The events the adapter announces of its own runs: ``workflow_started`` when a run is dispatched, and
exactly one ``workflow_completed`` when it ends (a failed or cancelled run too, with its status), as the
Namel3ss event runtime does; for each node of a workflow, ``block_started`` and ``block_completed``. A run started by a trigger carries its event's correlation id, and its
events are one level deeper than that event (``metadata["depth"]``), so a loop is stopped."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..plan.model import Plan
from .model import Event, EventType

SOURCE = "namel3ss-celery"
ONCE = "once"  # in an event's metadata: it may be announced again (a settle resumed); act on it once


def _lineage(context: Mapping[str, Any] | None) -> tuple[str | None, str | None, int]:
    """The trigger event's id, correlation id, and the depth of the run's own events."""
    trigger = (context or {}).get("trigger_event")
    if not isinstance(trigger, Mapping):
        return None, None, 0
    depth = int((trigger.get("metadata") or {}).get("depth", 0)) + 1
    return trigger.get("event_id"), trigger.get("correlation_id"), depth


def _name(plan: Plan, context: Mapping[str, Any] | None) -> str:
    """The workflow's name in its events: the plan's, or the one an event workflow was registered under."""
    return str((context or {}).get("event_workflow") or plan.name)


def _about(run_id: str, plan: Plan, context: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None, int]:
    """What every event of a run says of it (its workflow's name, the run's id, the event that started it), the
    correlation id, and the depth of the run's own events."""
    trigger_id, correlation, depth = _lineage(context)
    data = {"workflow_name": _name(plan, context), "instance_id": run_id, "trigger_event_id": trigger_id}
    return data, correlation, depth


def run_started(run_id: str, plan: Plan, context: Mapping[str, Any] | None) -> Event:
    data, correlation, depth = _about(run_id, plan, context)
    data["kind"] = plan.kind
    return Event.new(EventType.WORKFLOW_STARTED, SOURCE, data, correlation_id=correlation, metadata={"depth": depth})


def run_ended(run_id: str, plan: Plan, final: Any, context: Mapping[str, Any] | None) -> Event:
    data, correlation, depth = _about(run_id, plan, context)
    status = str(getattr(final, "overall_status", "failed"))
    data.update(kind=plan.kind, status=status, duration_ms=getattr(final, "total_duration_ms", None))
    if status != "completed":
        data["error"] = getattr(final, "error_message", None)
    data["blocks"] = block_summaries(final)
    # Its id is the run's: a settle resumed after its process died announces the same event again, and the
    # stream and the triggers take it once (``EventStore.append_once``, ``TriggerFiring.fire``).
    return Event.new(
        EventType.WORKFLOW_COMPLETED,
        SOURCE,
        data,
        correlation_id=correlation,
        metadata={"depth": depth, ONCE: True},
        event_id=ended_event_id(run_id),
    )


def block_moved(run_id: str, plan: Plan, node: str, result: Any, context: Mapping[str, Any] | None) -> Event:
    """``block_started`` for a workflow's node just launched (``result`` None), else ``block_completed`` with the
    block's status, duration and step counts (its error too when it did not complete). Each has an id of its
    own run, node and kind: a launch or settle resumed after its process died announces it once."""
    data, correlation, depth = _about(run_id, plan, context)
    spec = plan.by_name[node].block
    data.update(node=node, block=spec.name, strategy=str(spec.strategy))
    kind = EventType.BLOCK_STARTED
    if result is not None:
        kind = EventType.BLOCK_COMPLETED
        status = str(result.overall_status)
        data.update(
            status=status,
            duration_ms=result.total_duration_ms,
            total_tasks=result.total_tasks,
            completed_tasks=result.completed_tasks,
            failed_tasks=result.failed_tasks,
            cancelled_tasks=result.cancelled_tasks,
        )
        if status != "completed":
            data["error"] = result.error_message
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"namel3ss-celery:run:{run_id}:{node}:{kind}").hex
    metadata = {"depth": depth, ONCE: True}
    return Event.new(kind, SOURCE, data, correlation_id=correlation, metadata=metadata, event_id=event_id)


def ended_event_id(run_id: str) -> str:
    """The id of run ``run_id``'s ``workflow_completed`` event, the same wherever it is announced."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"namel3ss-celery:run:{run_id}:ended").hex


def block_summaries(final: Any) -> list[dict[str, Any]]:
    """Each block of a finished run, as metrics read it: strategy, status, duration, each step's target,
    status, retries (tries after its first) and dead-letter queue, and the seconds its race losers ran."""
    blocks = getattr(final, "blocks", None)
    results = (
        dict(blocks) if isinstance(blocks, Mapping) else ({getattr(final, "block_name", ""): final} if final else {})
    )
    summaries = []
    for node, block in results.items():
        racing = str(block.strategy) in ("race", "any_success")
        losers = [
            r.duration_ms or 0.0
            for r in block.results
            if racing and r.metadata.get("outcome") not in (None, "won", "not_started")
        ]
        summaries.append(
            {
                "node": node,
                "strategy": str(block.strategy),
                "status": str(block.overall_status),
                "duration_ms": block.total_duration_ms,
                "steps": [
                    {
                        "target": r.metadata.get("target"),
                        "status": str(r.status),
                        "retries": int(r.metadata.get("attempts", 1)) - 1,
                        "dead_letter": r.metadata.get("dead_letter"),
                    }
                    for r in block.results
                ],
                "loser_seconds": sum(losers) / 1000,
            }
        )
    return summaries


def step_done(message: Any, outcome: Any) -> Event:
    """``task_completed`` (or ``task_failed``, with the status: failed or cancelled) for one step on a worker;
    its depth is its run's, so a trigger on step events cannot loop either."""
    trigger_id, correlation, depth = _lineage(message.context)
    completed = str(outcome.status) == "completed"
    took = (outcome.end - outcome.start) * 1000 if outcome.end is not None and outcome.start is not None else None
    data = {
        "instance_id": message.run,
        "block": message.node,
        "step": message.key,
        "target": message.step.get("target"),
        "status": str(outcome.status),
        "outcome": str(outcome.outcome) if outcome.outcome is not None else None,
        "duration_ms": took,
        "error": outcome.error,
        "attempts": outcome.attempts,
        "trigger_event_id": trigger_id,
    }
    kind = EventType.TASK_COMPLETED if completed else EventType.TASK_FAILED
    return Event.new(kind, SOURCE, data, correlation_id=correlation, metadata={"depth": depth})
