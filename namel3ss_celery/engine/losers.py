"""``terminate_losers``: a decided block's running prefork losers, terminated, and filed as stopped."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..plan.kinds import Outcome
from ..plan.model import PlanNode
from ..spec import step_key
from .control import BlockControl
from .ports import CoordinationStore, Publisher
from .runner import StepOutcome

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
