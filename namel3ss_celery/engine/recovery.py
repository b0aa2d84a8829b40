"""Ending blocks from outside their steps: a deadline that passed, a cancel, and the launches and settles whose
process died half way (``leases``). The conductor's ``decide_and_settle``, ``cancel`` and ``resume`` call
these; settling itself stays the conductor's, so every path ends a block the same way."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from ..plan import fields
from ..plan.model import Plan, PlanNode
from ..results import ParallelExecutionResult
from .advance import final_result, node_results
from .control import BlockControl
from .decide import CANCELLED, Decision
from .ports import CoordinationStore

logger = logging.getLogger("namel3ss_celery")


class Conductor(Protocol):
    """What these need of the conductor (``conductor.Conductor``): its store, and how it settles and launches."""

    @property
    def store(self) -> CoordinationStore: ...

    def settle_node(self, run_id: str, node: str) -> None: ...

    def settle_claimed(
        self, run_id: str, node: str, record: Mapping[str, str], envelopes: Mapping[int, str]
    ) -> None: ...

    def move_on(
        self, run_id: str, plan: Plan, record: Mapping[str, str], node: str, result: ParallelExecutionResult
    ) -> None: ...

    def launch(
        self, run_id: str, plan: Plan, nodes: list[PlanNode], record: Mapping[str, str], outputs: dict[str, Any]
    ) -> None: ...

    def announce_end(self, run_id: str, plan: Plan, final: Any) -> None: ...


def decide_and_settle(conductor: Conductor, run_id: str, node: str, decision: Decision) -> None:
    """A deadline or a cancel: decide the block (unless it settled or was decided first), then settle it.

    A block claimed as settled whose run has not ended is settled again (its settler died half way:
    the result, the end of the run or the next launches are claimed, so nothing happens twice).
    """
    store = conductor.store
    settled, done = store.get_fields(run_id, [fields.settled(node), fields.DONE])
    if settled is None:
        BlockControl(store, run_id, node).decide(decision)
        conductor.settle_node(run_id, node)  # claimed: settles once, under whichever decision came first
    elif done != "1":
        record = store.run_record(run_id)
        if record is not None and record.get(fields.DONE) != "1":
            settle_again(conductor, run_id, node, record, decision)


def settle_again(
    conductor: Conductor, run_id: str, node: str, record: Mapping[str, str], decision: Decision | None
) -> None:
    """Finish settling a block claimed as settled whose run did not move on (its settler died half way):
    the result, the end of the run and the next launches are claimed, so nothing happens twice."""
    logger.warning("block %s of run %s was claimed but its run did not move on: settling it again", node, run_id)
    store = conductor.store
    filed = record.get(fields.node_result(node))
    if filed is not None:  # its result is out: the run moves on from it
        plan = Plan.from_json(record[fields.PLAN])
        conductor.move_on(run_id, plan, record, node, ParallelExecutionResult.from_dict(json.loads(filed)))
        store.drop_deadline(run_id, node)
        return
    if decision is not None and BlockControl(store, run_id, node).decide(decision):
        record = {**record, fields.decided(node): decision.to_json()}
    conductor.settle_claimed(run_id, node, record, store.step_envelopes(run_id, node))


def resume(conductor: Conductor, run_id: str, node: str) -> None:
    """Finish the launch or the settle of ``node`` whose process died half way (its lease ran out and this
    process took it over, see ``leases``); then nobody holds it."""
    store = conductor.store
    record = store.run_record(run_id)
    if record is not None and record.get(fields.DONE) != "1":
        plan = Plan.from_json(record[fields.PLAN])
        if fields.settled(node) in record:
            settle_again(conductor, run_id, node, record, None)
        elif fields.launched(node) in record and node in plan.by_name:
            sent = record.get(fields.published(node), "0")
            logger.warning(
                "the launch of block %s of run %s stopped after %s messages: finishing it", node, run_id, sent
            )
            conductor.launch(run_id, plan, [plan.by_name[node]], record, node_results(plan, record)[1])
    elif record is not None:
        # The run ended, but whoever ended it may have died before announcing it: announce it (again).
        logger.warning("run %s ended while block %s was held by a process that died: announcing its end", run_id, node)
        conductor.announce_end(run_id, Plan.from_json(record[fields.PLAN]), final_result(record))
    store.drop_lease(run_id, node)


def cancel(conductor: Conductor, run_id: str) -> None:
    """Cancel a run: every launched, unsettled block ends as cancelled; its steps stop or never start."""
    store = conductor.store
    store.set_fields(run_id, {fields.CANCELLED: "1"})
    record = store.run_record(run_id) or {}
    plan = Plan.from_json(record[fields.PLAN])
    for node in plan.nodes:
        if fields.launched(node.name) in record and fields.settled(node.name) not in record:
            decide_and_settle(conductor, run_id, node.name, CANCELLED)
