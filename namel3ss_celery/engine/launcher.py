"""Launching nodes: publish their steps (with their feed and deadline), settle at once a node that has none,
and resume a launch that died while publishing (``launching``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DecodeError, SpecError
from ..plan import fields
from ..plan.model import Plan, PlanNode
from ..registry import Registry
from ..results import RunStatus
from .advance import node_settled
from .control import BlockControl
from .decide import CANCELLED, Decision
from .launching import Unfinished, begin, unfinished
from .launching import tracked as track
from .nodes import launched, node_context, with_fan_out
from .ports import CoordinationStore, Launching, Publisher
from .runner import describe
from .settle import settle_block

logger = logging.getLogger("namel3ss_celery")


class Launcher:
    """The conductor's launches.

    Args:
        store: the coordination store (made on first use).
        publisher: the publisher (connected after the conductor is made).
        registry: where reducers are found when a node with no steps settles.
        ttl: seconds a run's keys live.
        executed_on: what results report as where they ran.
        settle_node: the conductor's settle (a resumed launch that fails settles its block).
        run_ended: told once when a launch ends its run (a block that could not start failed it).
    """

    def __init__(
        self,
        store: Callable[[], CoordinationStore],
        publisher: Callable[[], Publisher[Any]],
        registry: Registry,
        ttl: int,
        executed_on: str,
        settle_node: Callable[[str, str], None],
        run_ended: Callable[[str, Plan, Any], None],
    ) -> None:
        self._store = store
        self._publisher = publisher
        self.registry = registry
        self.ttl = ttl
        self.executed_on = executed_on
        self.settle_node = settle_node
        self.run_ended = run_ended

    @property
    def store(self) -> CoordinationStore:
        return self._store()

    @property
    def publisher(self) -> Publisher[Any]:
        return self._publisher()

    def launch_roots(self, run_id: str) -> float | None:
        """Publish the nodes of a new run that depend on nothing (``n3.run.launch``, on a worker).

        Delivered again after its worker died while publishing, it sends what was not sent yet
        (``launching``). Returns ``None`` when done, or the seconds after which to look again, when
        another process may still be publishing a node. ``dispatch`` launches a small run itself,
        with ``launch``.
        """
        record = self.store.run_record(run_id)
        if record is None:
            logger.warning("run %s expired before it was launched", run_id)
            return None
        plan = Plan.from_json(record[fields.PLAN])
        roots: list[PlanNode] = []
        cancelled: dict[str, str | None] = {}
        wait: float | None = None
        for node in plan.nodes:
            if node.depends_on:
                continue
            # Whether the run was cancelled, read with the claim: a cancel that comes later sees the claim.
            claimed, cancelled[node.name] = self.store.claim_and_get(
                run_id, fields.launched(node.name), fields.CANCELLED
            )
            if claimed:
                roots.append(node)
                continue
            total = len(launched(node, record).block.steps)
            left = unfinished(record, node.name, total, time.time())
            if left is None:
                continue
            if left.wait > 0:
                wait = left.wait if wait is None else min(wait, left.wait)
            elif self.store.claim(run_id, fields.resumed(node.name, left.start)):
                logger.warning("resuming the launch of block %s of run %s at step %d", node.name, run_id, left.start)
                self._resume(run_id, plan, launched(node, record), record, left)
        self.launch(run_id, plan, roots, record, {}, cancelled, tracked=True)
        return wait

    def _resume(self, run_id: str, plan: Plan, node: PlanNode, record: Mapping[str, str], left: Unfinished) -> None:
        try:
            launching = track(self.store, run_id, node.name, left.start, left.group_id)
            self._publish(run_id, plan, node, node_context(record, {}), launching, fresh=False)
        except Exception as exc:  # noqa: BLE001 - a block that cannot start ends as failed
            logger.exception("resuming the launch of block %s of run %s failed", node.name, run_id)
            if BlockControl(self.store, run_id, node.name).decide(
                Decision(RunStatus.FAILED, None, f"launching the block failed: {describe(exc)}")
            ):
                self.settle_node(run_id, node.name)

    def launch(
        self,
        run_id: str,
        plan: Plan,
        nodes: list[PlanNode],
        record: Mapping[str, str],
        outputs: dict[str, Any],
        cancelled: Mapping[str, str | None] | None = None,
        tracked: bool = False,
    ) -> None:
        """Publish each node's steps (and its feed and deadline); a node with no steps settles at once.

        ``cancelled``: the run's cancelled field as read when a node was claimed (otherwise it is read here).
        ``tracked``: keep the progress of publishing ``nodes`` in the run's record, so a launch delivered
        again resumes it (``launch_roots``).
        """
        pending, cancelled = deque(nodes), cancelled or {}
        while pending:
            node, context, failure = pending.popleft(), {}, None
            fanned = node.block.fan_out is not None
            try:
                context = node_context(record, outputs)
                node = with_fan_out(node, context)
            except (SpecError, DecodeError) as exc:  # its fan-out list, or a stored context it cannot read
                failure = Decision(RunStatus.FAILED, None, str(exc))
            if fanned and failure is None:
                self.store.set_fields(run_id, {fields.expanded_block(node.name): node.block.model_dump_json()})
            if failure is None and (
                cancelled[node.name] if node.name in cancelled else self.store.get_fields(run_id, [fields.CANCELLED])[0]
            ):
                failure = CANCELLED
                BlockControl(self.store, run_id, node.name).decide(failure)
            if node.block.steps and failure is None:
                try:
                    if tracked:
                        begin(self.store, run_id, node.name)
                    launching = track(self.store, run_id, node.name, 0, None) if tracked else Launching()
                    self._publish(run_id, plan, node, context, launching)
                    continue
                except Exception as exc:  # noqa: BLE001 - a block that cannot start ends as failed
                    logger.exception("launching block %s of run %s failed", node.name, run_id)
                    failure = Decision(RunStatus.FAILED, None, f"launching the block failed: {describe(exc)}")
            if self.store.claim(run_id, fields.settled(node.name)):
                result = settle_block(node.block, {}, self.registry, executed_on=self.executed_on, decision=failure)
                advance = node_settled(self.store, run_id, plan, node.name, result, self.ttl)
                if advance.ended:
                    self.run_ended(run_id, plan, advance.final)
                outputs = advance.outputs
                pending.extend(advance.launch)

    def _publish(
        self,
        run_id: str,
        plan: Plan,
        node: PlanNode,
        context: dict[str, Any],
        launching: Launching,
        fresh: bool = True,
    ) -> None:
        prepared = self.publisher.prepare_node(run_id, plan, node, context)
        if fresh:  # a resumed launch finds its feed and deadline in place
            self.store.push_items(run_id, fields.feed(node.name), prepared.feed, self.ttl)
            if prepared.deadline is not None:  # enforce_deadlines decides it then, whichever process looks
                self.store.add_deadline(run_id, node.name, prepared.deadline, self.ttl)
        self.publisher.send_node(run_id, plan, node, prepared, launching)
        launching.sent(len(node.block.steps))  # done: a launch delivered again finds nothing left to send
