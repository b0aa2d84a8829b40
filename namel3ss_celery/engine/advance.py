"""Moving a run on: file a settled node's result, then launch what it unblocked or end the run."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..plan import fields
from ..plan.model import Plan, PlanNode
from ..results import ParallelExecutionResult, RunStatus, WorkflowResult, result_from_dict
from .leases import launch_lease
from .ports import CoordinationStore


@dataclass
class Advance:
    """What settling one node means for its run: nodes to launch now, and the final result if it ended."""

    launch: list[PlanNode]
    outputs: dict[str, Any]
    final: ParallelExecutionResult | WorkflowResult | None = None
    ended: bool = False  # this call ended the run (exactly one call does, whatever the duplicates)


def node_results(
    plan: Plan, record: Mapping[str, str], known: Mapping[str, ParallelExecutionResult] | None = None
) -> tuple[dict[str, ParallelExecutionResult], dict[str, Any]]:
    """The results filed in a run record so far, and the outputs of the nodes that completed. ``known``:
    results already in hand (the one just filed), taken as they are rather than read back."""
    known = known or {}
    results = {
        n.name: known[n.name]
        if n.name in known
        else ParallelExecutionResult.from_dict(json.loads(record[fields.node_result(n.name)]))
        for n in plan.nodes
        if fields.node_result(n.name) in record
    }
    outputs = {
        name: plan.by_name[name].output(r) for name, r in results.items() if r.overall_status == RunStatus.COMPLETED
    }
    return results, outputs


def node_settled(
    store: CoordinationStore, run_id: str, plan: Plan, node: str, result: ParallelExecutionResult, ttl: int
) -> Advance:
    """File ``node``'s result, then launch what it unblocked or end the run.

    Idempotent under duplicate calls: launches (each with its lease, see ``leases``) and the end are claimed
    in the store.
    """
    filed = json.dumps(result.to_dict())
    record = store.set_and_read(run_id, {fields.node_result(node): filed})
    results, outputs = node_results(plan, record, {node: result})
    if fields.FINAL in record:  # the run already ended: nothing more starts
        return Advance([], outputs, final_result(record))
    failed = result.overall_status != RunStatus.COMPLETED
    if failed or len(outputs) == len(plan.nodes):
        final = run_result(plan, run_id, record, results, outputs, failed_node=node if failed else None)
        text = filed if plan.kind == "block" else json.dumps(final.to_dict())  # a block run: its block
        ended = store.finish(
            run_id, {fields.STATUS: str(final.overall_status), fields.RESULT: text}, ttl, claim=fields.FINAL
        )
        return Advance([], outputs, final, ended)
    launch = [
        n
        for n in plan.nodes
        if n.name not in results
        and set(n.depends_on) <= set(outputs)
        and store.claim(run_id, fields.launched(n.name), lease=launch_lease(n.name))
    ]
    return Advance(launch, outputs)


def run_result(
    plan: Plan,
    run_id: str,
    record: Mapping[str, str],
    results: Mapping[str, ParallelExecutionResult],
    outputs: Mapping[str, Any],
    failed_node: str | None,
) -> ParallelExecutionResult | WorkflowResult:
    """A block run's result is the block's; a workflow's or program's is a ``WorkflowResult``."""
    if plan.kind == "block":
        return results[plan.nodes[0].name]
    status = results[failed_node].overall_status if failed_node else RunStatus.COMPLETED
    sinks = plan.sinks()
    final = None
    if not failed_node:
        final = outputs[sinks[0]] if len(sinks) == 1 else {s: outputs[s] for s in sinks}
    created = float(record.get(fields.CREATED, 0)) or None
    end = time.time()
    return WorkflowResult(
        run_id=run_id,
        name=plan.name,
        overall_status=status,
        blocks={name: r for name, r in results.items() if not plan.by_name[name].single},
        outputs=dict(outputs),
        final_result=final,
        failed_node=failed_node,
        error_message=f"node {failed_node!r}: {results[failed_node].error_message}" if failed_node else None,
        start_time=created,
        end_time=end,
        total_duration_ms=round((end - created) * 1000, 3) if created else None,
        metadata={"kind": plan.kind, "nodes": {name: str(r.overall_status) for name, r in results.items()}},
    )


def final_result(record: Mapping[str, str]) -> ParallelExecutionResult | WorkflowResult | None:
    """The final result filed in a run record, if the run has ended."""
    raw = record.get(fields.RESULT)
    return result_from_dict(json.loads(raw)) if raw else None


def refreshed_final(
    store: CoordinationStore, run_id: str, plan: Plan
) -> ParallelExecutionResult | WorkflowResult | None:
    """The run's final result rebuilt from its nodes' (refreshed) results; ``None`` while the run goes on.

    Its status and failed node stay as they were decided: only what losers did is new.
    """
    record = store.run_record(run_id) or {}
    previous = final_result(record)
    if previous is None:
        return None
    results, outputs = node_results(plan, record)
    failed_node = previous.failed_node if isinstance(previous, WorkflowResult) else None
    final = run_result(plan, run_id, record, results, outputs, failed_node)
    if isinstance(final, WorkflowResult) and isinstance(previous, WorkflowResult):
        final.end_time, final.total_duration_ms = previous.end_time, previous.total_duration_ms
    return final
