"""Run handles: a dispatched run, read back from the coordination store from any process."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from .engine.advance import final_result
from .engine.ports import CoordinationStore
from .errors import InvalidArgument, UnknownRun, WaitTimeout
from .plan import fields
from .plan.model import Plan
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .spec.limits import MAX_DURATION_SECONDS

RunResult = ParallelExecutionResult | WorkflowResult

DEFAULT_WAIT = 300.0
DIAGNOSED_WAIT = 1.0  # a wait at least this long that times out says which queue has no worker (a look of ~1 s)
IdleQueues = Callable[[str], dict[str, list[str]]]


@dataclass(frozen=True)
class NodeProgress:
    """One node of a running run: ``done`` of ``total`` steps reported, and its ``state``."""

    node: str
    done: int
    total: int
    state: str


class RunHandle:
    """A dispatched run, read back from the coordination store.

    Args:
        store: the coordination store (made on first use).
        cancel: what cancels a run by its id (the engine's ``Conductor.cancel``).
        run_id: the run's id.
        idle: what finds the queues a run waits on that no worker consumes (see ``idle_queues``).
    """

    def __init__(
        self,
        store: Callable[[], CoordinationStore],
        cancel: Callable[[str], None],
        run_id: str,
        idle: IdleQueues | None = None,
    ) -> None:
        self._store = store
        self._cancel = cancel
        self._idle = idle
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def _record(self) -> dict[str, str]:
        record = self._store().run_record(self.id)
        if record is None:
            raise UnknownRun(self.id)
        return record

    def status(self) -> RunStatus:
        """``running`` until the run ends, then its final status."""
        return RunStatus(self._record()[fields.STATUS])

    def get(self, timeout: float = DEFAULT_WAIT) -> RunResult:
        """Wait for the run to end and return its result, whatever its final status.

        Every wait has a bound: unlike Celery's ``AsyncResult.get(timeout=None)``, which waits
        forever, ``timeout=None`` is refused; wait in a loop of bounded waits if you must.

        Args:
            timeout: seconds to wait, a finite number from 0 (look once) to ``MAX_DURATION_SECONDS``.

        Raises:
            InvalidArgument: ``timeout`` is ``None``, not a number, negative, NaN, infinite or too large
                (a ``ValueError``; ``.argument == "timeout"``).
            WaitTimeout: the run did not end within ``timeout`` seconds (it goes on). After a wait of
                ``DIAGNOSED_WAIT`` seconds or more, it names the queues the run waits on that no worker
                consumes (``.idle_queues``), if any.
            UnknownRun: no such run.
        """
        check_timeout(timeout)
        filed = self._store().wait(self.id, timeout)
        if filed is None:
            status = str(self.status())  # raises UnknownRun for no run
            idle = self.idle_queues() if timeout >= DIAGNOSED_WAIT else {}
            raise WaitTimeout(self.id, timeout, status, idle)
        result = final_result({fields.RESULT: filed})
        if result is None:
            raise UnknownRun(self.id)
        return result

    def progress(self) -> list[NodeProgress]:
        """Each node of the run, in plan order: steps reported of total, and its state.

        A node's state is ``waiting`` (not launched), ``running``, or its final status.
        """
        record = self._record()
        plan = Plan.from_json(record[fields.PLAN])
        counts = self._store().step_counts(self.id, [n.name for n in plan.nodes])
        rows = []
        for node in plan.nodes:
            expanded = record.get(fields.expanded_block(node.name))
            total = len(json.loads(expanded)["steps"]) if expanded else len(node.block.steps)
            state = "waiting"
            if fields.node_result(node.name) in record:
                state = json.loads(record[fields.node_result(node.name)])["overall_status"]
            elif fields.launched(node.name) in record:
                state = "running"
            rows.append(NodeProgress(node.name, min(counts.get(node.name, 0), total), total, state))
        return rows

    def idle_queues(self) -> dict[str, list[str]]:
        """The queues this running run waits on that no worker consumes now, each with what waits there
        (``node 'name'``, or ``its launch`` for a run not launched yet); empty when workers consume them all, or the run
        ended. Asking Redis workers takes about a second (RabbitMQ counts consumers itself)."""
        return self._idle(self.id) if self._idle is not None else {}

    def cancel(self) -> None:
        """Cancel the run from any process: its running blocks end as ``cancelled``.

        Queued steps never start; running ones are asked to stop (``cancelled()``,
        async steps are cancelled); the run's result keeps what had completed.
        A run that already ended is left as it is.
        """
        if self._record().get(fields.DONE) != "1":
            self._cancel(self.id)

    async def aget(self, timeout: float = DEFAULT_WAIT) -> RunResult:
        """``get`` for asyncio code; the wait runs in a thread, the event loop stays free.

        ``timeout`` is bounded as for ``get`` (``None`` is refused, not "forever").

        Raises:
            InvalidArgument: ``timeout`` is not a finite number of seconds from 0 to ``MAX_DURATION_SECONDS``.
            WaitTimeout: the run did not end within ``timeout`` seconds (it goes on).
            UnknownRun: no such run.
        """
        check_timeout(timeout)
        return await asyncio.to_thread(self.get, timeout)


def check_timeout(timeout: object) -> None:
    """Refuse a wait without a sane bound.

    Raises:
        InvalidArgument: ``timeout`` is not a finite number of seconds from 0 to ``MAX_DURATION_SECONDS``.
    """
    if timeout is None:
        raise InvalidArgument(
            "every wait has a bound: give a number of seconds (None does not mean 'forever' here, "
            "as it does for Celery's AsyncResult.get)",
            "timeout",
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgument(f"a number of seconds, not {type(timeout).__name__} ({timeout!r})", "timeout")
    if not (math.isfinite(timeout) and 0 <= timeout <= MAX_DURATION_SECONDS):
        raise InvalidArgument(
            f"a finite number of seconds from 0 to {MAX_DURATION_SECONDS:.0f} (MAX_DURATION_SECONDS), not {timeout!r}",
            "timeout",
        )
