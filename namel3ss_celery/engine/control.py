"""Block control: record a block's decision, and whether a step may start or must stop.

The decision is an atomic claim in the coordination store; steps read it
before they start (the start guard) and while they run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

from ..errors import StoreUnavailable
from ..plan import fields
from .decide import TIMED_OUT, Decision
from .ports import CoordinationStore, Held

logger = logging.getLogger("namel3ss_celery")


class BlockControl:
    """The control fields of one block of one run."""

    def __init__(self, store: CoordinationStore, run_id: str, node: str, deadline: float | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.node = node
        self.deadline = deadline

    @property
    def decided_field(self) -> str:
        return fields.decided(self.node)

    def decide(self, decision: Decision) -> bool:
        """Record ``decision`` unless another was recorded first; True for the one that won."""
        return self.store.claim(self.run_id, self.decided_field, decision.to_json())

    def decision(self) -> Decision | None:
        (raw,) = self.store.get_fields(self.run_id, [self.decided_field])
        return Decision.from_json(raw) if raw else None

    def stop_requested(self) -> bool:
        """True once the block is decided, its deadline passed or the run cancelled: do not start, or stop."""
        if self.overdue() is not None:
            return True
        decided, cancelled = self.store.get_fields(self.run_id, [self.decided_field, fields.CANCELLED])
        return bool(decided or cancelled)

    def asked_to_stop(self) -> bool:
        """``stop_requested`` for a step that is running (what ``cancelled()`` asks): a store that does not
        answer now is not a request to stop, and the step goes on (the next check asks again)."""
        try:
            return self.stop_requested()
        except StoreUnavailable as exc:
            logger.warning("step of block %s of run %s: cannot read whether to stop (%s)", self.node, self.run_id, exc)
            return False

    def overdue(self) -> Decision | None:
        """The timeout decision, once the block's deadline has passed."""
        if self.deadline is not None and time.time() >= self.deadline:
            return TIMED_OUT
        return None

    def start(
        self, index: int, worker: str, pool: str, pid: int, task_id: str, held: Held | None = None, delivery: str = ""
    ) -> bool:
        """The start guard: mark a step started; True when it may run, False when its block is decided or
        ended, or the run cancelled.

        One atomic round trip: a step is marked started only if nothing decided its block first,
        so a decider sees exactly the steps that will run.

        Raises:
            UnknownRun: the run's record is gone (expired).
        """
        if self.overdue() is not None:
            if held is not None:  # held as its process took it (take): it will not start
                self.store.release(held.worker, held.member)
            return False
        started = {"worker": worker, "pool": pool, "pid": pid, "task_id": task_id, "start": time.time()}
        info = json.dumps(started | ({"delivery": delivery} if delivery else {}))
        return self.store.set_unless(self.run_id, fields.started(self.node, index), info, self._guards(), held)

    def take(self, index: int, held: Held, delivery: str) -> bool:
        """Hold step ``index`` in its worker's name as a pool process takes it, before its message is
        acknowledged (``CoordinationStore.take_step``), unless it would not start or is filed, or this
        ``delivery`` of it (its task id and retries, as ``start`` records them) passed its start guard already:
        that process holds it, or has let it go (a retry sent on), itself. The member is the one its start
        guard holds, so a hold landing while the step runs changes nothing, and its filing lets go of both."""
        if self.overdue() is not None:
            return False
        passed = (fields.started(self.node, index), delivery_mark(delivery))
        return self.store.take_step(self.run_id, self.node, index, held, self._guards(), passed)

    def _guards(self) -> list[str]:
        """The fields whose being set keeps a step from starting: its block decided or settled, the run
        cancelled."""
        return [self.decided_field, fields.settled(self.node), fields.CANCELLED]

    def decision_in(self, record: Mapping[str, str]) -> Decision | None:
        """The block's decision as a run record holds it."""
        raw = record.get(self.decided_field)
        return Decision.from_json(raw) if raw else None

    def started(self, record: Mapping[str, str]) -> dict[int, dict[str, object]]:
        """Which steps started, from a run record: index -> worker, pool, pid, task_id."""
        prefix = fields.started_prefix(self.node)
        return {int(k[len(prefix) :]): json.loads(v) for k, v in record.items() if k.startswith(prefix)}


def delivery_of(task_id: str, retries: int | None) -> str:
    """One delivery of a step: its task id and how many retries came before (what ``start`` records and
    ``take`` looks for)."""
    return f"{task_id}:{retries or 0}"


def delivery_mark(delivery: str) -> str:
    """How a started field written by ``start`` for ``delivery`` reads in part (``"delivery": "..."``)."""
    return json.dumps({"delivery": delivery})[1:-1]
