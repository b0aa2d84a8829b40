"""Losers of a decided block: running prefork ones terminated (``terminate_losers``) and filed as stopped, and
the block's result rewritten as they report."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ..plan import fields
from ..plan.kinds import Outcome
from ..plan.model import Plan, PlanNode
from ..registry import Registry
from ..spec import step_key
from ..tracing import event
from .advance import refreshed_final
from .control import BlockControl
from .nodes import launched
from .ports import CoordinationStore, Publisher
from .runner import StepOutcome
from .settle import settle_block

logger = logging.getLogger("namel3ss_celery")


def stop_losers(
    store: CoordinationStore,
    publisher: Publisher[Any],
    node: PlanNode,
    control: BlockControl,
    record: Mapping[str, str],
    ttl: int,
) -> bool:
    """Terminate running prefork losers (``terminate_losers``); True when any was.

    Every running loser is already asked to stop (it reads the decision); on other pools a
    loser that never checks runs to its end, and that is logged.
    """
    envelopes = store.step_envelopes(control.run_id, node.name)
    decision = control.decision_in(record)
    terminated = False
    for index, info in control.started(record).items():
        if index in envelopes or (decision is not None and decision.winner == index):
            continue
        if info.get("pool") != "prefork":
            logger.warning(
                "terminate_losers: step %s of block %s runs on a %s pool, which cannot terminate it",
                index,
                node.name,
                info.get("pool"),
            )
            continue
        if info.get("task_id"):
            terminated = True
            publisher.terminate(str(info["task_id"]))
            event("terminated", step=step_key(node.block.steps[index], index), task_id=info["task_id"])  # on n3.settle
            # A terminated step files nothing itself; if it finishes first, its own envelope replaces this.
            outcome = StepOutcome.stopped(
                step_key(node.block.steps[index], index),
                "terminated: its block no longer needed it (terminate_losers)",
                Outcome.STOPPED,
                worker=str(info.get("worker", "")),
                task_id=str(info["task_id"]),
                start=float(info["start"]) if info.get("start") else None,  # type: ignore[arg-type]
            )
            store.record_step(control.run_id, node.name, index, outcome.envelope(), ttl, keep=True)
    return terminated


def refresh_decided(store: CoordinationStore, registry: Registry, executed_on: str, run_id: str, node: str) -> bool:
    """Every step of a decided block has now reported: rewrite its result (and the run's) with what the losers
    did. False when nobody has claimed settling the block yet: nothing is rewritten, it is to be settled."""
    record = store.run_record(run_id)
    if record is None:
        return True
    if fields.settled(node) not in record:
        return False
    if fields.node_result(node) not in record:
        return True  # claimed, its result not filed yet: nothing to rewrite
    if "decided" not in json.loads(record[fields.node_result(node)]).get("metadata", {}):
        return True  # it settled with every step reported, under no decision: nothing of it changes later
    plan = Plan.from_json(record[fields.PLAN])
    control = BlockControl(store, run_id, node)
    result = settle_block(
        launched(plan.by_name[node], record).block,
        store.step_envelopes(run_id, node),
        registry,
        executed_on=executed_on,
        decision=control.decision(),
        started=control.started(record),
    )
    store.set_fields(run_id, {fields.node_result(node): json.dumps(result.to_dict())})
    final = refreshed_final(store, run_id, plan)
    if final is not None:
        store.set_fields(run_id, {fields.RESULT: json.dumps(final.to_dict())})
    return True
