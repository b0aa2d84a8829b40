"""Launching nodes: publish their steps (with their feed and deadline), settle at once a node that has none,
and finish a launch whose process died while publishing (``leases``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DecodeError, SpecError
from ..plan import fields
from ..plan.model import Plan, PlanNode
from ..registry import Registry
from ..results import RunStatus
from .advance import Advance, node_settled
from .control import BlockControl
from .decide import CANCELLED, Decision
from .leases import LAUNCH_LEASE, LeaseKeeper, launch_lease, tracked
from .nodes import node_context, with_fan_out
from .ports import CoordinationStore, Publisher
from .settle import settle_block
from .values import describe

logger = logging.getLogger("namel3ss_celery")


class Launcher:
    """The conductor's launches.

    Args:
        store: the coordination store (made on first use).
        publisher: the publisher (connected after the conductor is made).
        registry: where reducers are found when a node with no steps settles.
        ttl: seconds a run's keys live.
        executed_on: what results report as where they ran.
        settle_node: the conductor's settle (a block whose launch fails is settled as failed).
        run_ended: told once when a launch ends its run (a block that could not start failed it).
        leases: renews the leases of the nodes a launch holds.
        block_moved: told of each node published (its result None), and of each settled at once (its result).
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
        leases: LeaseKeeper,
        block_moved: Callable[[str, Plan, str, Any], None] = lambda *_: None,
    ) -> None:
        self._store = store
        self.leases = leases
        self._publisher = publisher
        self.registry = registry
        self.ttl = ttl
        self.executed_on = executed_on
        self.settle_node = settle_node
        self.run_ended = run_ended
        self.block_moved = block_moved

    @property
    def store(self) -> CoordinationStore:
        return self._store()

    @property
    def publisher(self) -> Publisher[Any]:
        return self._publisher()

    def launch_roots(self, run_id: str) -> None:
        """Publish the nodes of a new run that depend on nothing (``n3.run.launch``, on a worker).

        Each is claimed with its lease first: a launch delivered again finds them claimed and does nothing,
        and one whose process died half way is finished by a watchdog once its lease runs out (``leases``).
        ``dispatch`` launches a small run itself, with ``launch``.
        """
        record = self.store.run_record(run_id)
        if record is None:
            logger.warning("run %s expired before it was launched", run_id)
            return
        plan = Plan.from_json(record[fields.PLAN])
        roots: list[PlanNode] = []
        cancelled: dict[str, str | None] = {}
        for node in plan.nodes:
            if node.depends_on:
                continue
            # Whether the run was cancelled, read with the claim: a cancel that comes later sees the claim.
            claimed, cancelled[node.name] = self.store.claim_and_get(
                run_id, fields.launched(node.name), fields.CANCELLED, launch_lease(node.name)
            )
            if claimed:
                roots.append(node)
        self.launch(run_id, plan, roots, record, {}, cancelled)

    def launch(
        self,
        run_id: str,
        plan: Plan,
        nodes: list[PlanNode],
        record: Mapping[str, str],
        outputs: dict[str, Any],
        cancelled: Mapping[str, str | None] | None = None,
    ) -> None:
        """Publish each node's steps (and its feed and deadline); a node with no steps settles at once, and
        what it unblocks is launched in turn.

        The caller claimed each node with its lease (``leases``), dropped here once the node is published
        or settled. ``record``: the run's record as the caller read it; for a launch being finished, where
        its publishing got to. ``cancelled``: the run's cancelled field as read when a node was claimed
        (otherwise it is read here).
        """
        pending, cancelled = deque(nodes), cancelled or {}
        held = {node.name for node in nodes}
        for name in held:  # renewed while they wait their turn and while they publish
            self.leases.hold(run_id, name, LAUNCH_LEASE)
        try:
            while pending:
                node = pending.popleft()
                advance = self._launch_one(run_id, plan, node, record, outputs, cancelled)
                self.store.drop_lease(run_id, node.name)
                self.leases.let_go(run_id, node.name)
                held.discard(node.name)
                if advance is not None:
                    outputs = advance.outputs
                    for unblocked in advance.launch:
                        self.leases.hold(run_id, unblocked.name, LAUNCH_LEASE)
                        held.add(unblocked.name)
                        pending.append(unblocked)
        finally:  # on the way out with an error: what is left runs out for a watchdog to finish
            for name in held:
                self.leases.let_go(run_id, name)

    def _launch_one(
        self,
        run_id: str,
        plan: Plan,
        node: PlanNode,
        record: Mapping[str, str],
        outputs: dict[str, Any],
        cancelled: Mapping[str, str | None],
    ) -> Advance | None:
        """Publish one node, or settle it at once (no steps, cancelled, its fan-out unreadable): then what it
        moved the run on to."""
        context, failure = {}, None
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
                self._publish(run_id, plan, node, context, record)
            except Exception as exc:  # noqa: BLE001 - a block that cannot start ends as failed
                logger.exception("launching block %s of run %s failed", node.name, run_id)
                # Settled from the store: steps published before the failure may have reported already.
                reason = f"launching the block failed: {describe(exc)}"
                if BlockControl(self.store, run_id, node.name).decide(Decision(RunStatus.FAILED, None, reason)):
                    self.settle_node(run_id, node.name)
            else:
                self.block_moved(run_id, plan, node.name, None)
            return None
        if not self.store.claim(run_id, fields.settled(node.name)):
            return None
        result = settle_block(node.block, {}, self.registry, executed_on=self.executed_on, decision=failure)
        advance = node_settled(self.store, run_id, plan, node.name, result, self.ttl)
        self.block_moved(run_id, plan, node.name, result)
        if advance.ended:
            self.run_ended(run_id, plan, advance.final)
        return advance

    def _publish(
        self, run_id: str, plan: Plan, node: PlanNode, context: dict[str, Any], record: Mapping[str, str]
    ) -> None:
        """Send ``node``'s first steps, from where ``record`` says a launch that died got to (0 when new)."""
        done = record.get(fields.published(node.name))
        prepared = self.publisher.prepare_node(run_id, plan, node, context)
        if prepared.deadline is not None:  # enforce_deadlines decides it then, whichever process looks
            self.store.add_deadline(run_id, node.name, prepared.deadline, self.ttl)  # the first one stays
        if done is None:  # the feed and the mark that it is there, in one write: never pushed twice
            mark = (fields.published(node.name), "0") if prepared.feed else None
            self.store.push_items(run_id, fields.feed(node.name), prepared.feed, self.ttl, mark=mark)
        total, group_id = len(node.block.steps), record.get(fields.chord_group(node.name))
        launching = tracked(self.store, run_id, node.name, total, int(done or 0), group_id)
        self.publisher.send_node(run_id, plan, node, prepared, launching)
