"""One block run inline: the engine's rules for a block whose steps are calls of one ``async`` function in this
process, with no store and no messages between them.

The runtime API's in-process blocks (``execute_parallel_steps``, ``ParallelExecutor``) hand every step to one
step executor in the calling process. Nothing about such a step crosses a process, so the parts of the engine
that exist for crossing them (a message per step, the start guard against duplicate deliveries, the store
that files each envelope and records the decision atomically) would cost twenty times the step itself. Here
the same rules run on plain objects:

- each step's outcome is an ``Envelope``, its result checked by ``values.to_json_data`` and its error told
  by ``values.describe``, as on a worker;
- after each outcome, ``decide.decide_after`` says whether it decides the block (race, any_success,
  fail_fast); the deadline decides ``TIMED_OUT``;
- ``settle.settle_block`` makes the result, with ``stopping`` for the steps still running when the block was
  decided and ``not_started`` for the ones that never began;
- at most ``max_concurrency`` steps run at once, started in order, the next one as one ends (the engine's
  feed); ``cancelled()`` inside a step says whether its block was decided, and the steps still running when
  it is decided are cancelled.

What this does not do is refused by ``fits``, and such blocks run on the conductor (``local.LocalExecutor``):
retries, a step's own ``timeout_seconds`` or pool, a fan-out, and sync step functions (which run in threads).
``tests/unit/engine/test_inline.py`` runs a matrix of blocks both ways and compares the results.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import StepCancelled, StepResultError
from ..plan.envelope import Envelope
from ..plan.kinds import Outcome
from ..registry import Registry
from ..results import ParallelExecutionResult, TaskStatus
from ..spec import ParallelBlockSpec, ParallelStrategy, step_key
from .decide import TIMED_OUT, Decision, decide_after
from .runner import in_task_of_its_own
from .settle import settle_block
from .values import describe, to_json_data

InlineCall = Callable[[int, dict[str, Any]], Awaitable[Any]]

PLAIN = (str, int, float, bool, type(None))


def fits(block: ParallelBlockSpec) -> bool:
    """Whether ``block`` can run inline: no retries, no step with a time limit or a pool of its own, no fan-out
    (those need the conductor's machinery; the result is the same either way)."""
    if block.retry_failed or block.fan_out is not None:
        return False
    return all(step.timeout_seconds is None and step.worker_pool is None for step in block.steps)


class InlineBlock:
    """Runs one block inline (see the module's docstring).

    Args:
        block: the block, validated; each step's ``key`` names it in the result.
        call: awaited as ``call(index, context)`` for each step, ``index`` its place in ``block.steps``.
        context: JSON data each step receives (a copy of its own).
        reducers: where a ``map_reduce`` block's reducer is found.
        worker: the name each step's result reports as where it ran.
        executed_on: what the block's and each step's ``metadata`` say.
        run_id: the run the steps' log records name.
    """

    def __init__(
        self,
        block: ParallelBlockSpec,
        call: InlineCall,
        context: Mapping[str, Any],
        reducers: Registry,
        *,
        worker: str,
        executed_on: str,
        run_id: str,
    ) -> None:
        self.block, self.call, self.reducers = block, call, reducers
        self.worker, self.executed_on, self.run_id = worker, executed_on, run_id
        self.keys = [step_key(step, i) for i, step in enumerate(block.steps)]
        self.fresh_context = _copier(context)
        self.envelopes: dict[int, Envelope] = {}
        self.running: set[int] = set()  # steps begun and not yet ended
        self.decision: Decision | None = None
        self.next = 0
        self.done: asyncio.Future[ParallelExecutionResult] | None = None

    async def run(self) -> ParallelExecutionResult:
        """Run the block; return its result as soon as it is decided or every step has ended."""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        total = len(self.block.steps)
        timer = None
        if self.block.timeout_seconds:
            timer = loop.call_later(float(self.block.timeout_seconds), self.decide, TIMED_OUT)
        window = min(self.block.max_concurrency or total, total)
        runners = [loop.create_task(self.runner()) for _ in range(window)]
        try:
            if total == 0:
                self.settle()
            return await self.done
        finally:  # decided, ended, or the caller was cancelled: nothing of the block goes on
            if timer is not None:
                timer.cancel()
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)

    async def runner(self) -> None:
        """One of ``max_concurrency`` lanes: runs the next step not yet begun, in order, until none is left or
        the block is decided (the engine's feed: the next step starts as one ends)."""
        total = len(self.block.steps)
        naming = in_task_of_its_own(self.stopping)
        try:
            while self.next < total and self.decision is None:
                index = self.next
                self.next = index + 1
                naming((self.run_id, self.block.name, self.keys[index]))
                await self.step(index)
        except Exception as exc:  # noqa: BLE001 - a fault of this module itself: run() raises it, never waits
            self.fail(exc)

    def stopping(self) -> bool:
        """What ``cancelled()`` answers inside a step: whether its block was decided."""
        return self.decision is not None

    async def step(self, index: int) -> None:
        key = self.keys[index]
        self.running.add(index)
        start = time.time()
        outcome: Outcome | None = None
        result: Any = None
        error: str | None = None
        try:
            value = await self.call(index, self.fresh_context())
            result = self.json_data(value, index)
            status = TaskStatus.COMPLETED
        except StepCancelled as exc:  # the step saw cancelled() and stopped
            status, error, outcome = TaskStatus.CANCELLED, describe(exc), Outcome.STOPPED
        except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
            status, error = TaskStatus.FAILED, describe(exc)
        self.running.discard(index)
        end = time.time()
        self.file(index, Envelope(key, status, result, error, start, end, self.worker, "", outcome, self.executed_on))

    def json_data(self, value: Any, index: int) -> Any:
        """``to_json_data``, the step named (as a worker names it) only when its value is refused."""
        try:
            return to_json_data(value, "")
        except StepResultError:
            return to_json_data(value, f"step {self.keys[index]!r} ({self.block.steps[index].target})")

    def file(self, index: int, envelope: Envelope) -> None:
        """An outcome: kept, then what it decides (the engine's file and decide)."""
        if self.decision is not None:  # filed after the block was decided: the result is out already
            return
        self.envelopes[index] = envelope
        total = len(self.block.steps)
        decision = decide_after(
            self.block.strategy,
            fail_fast=self.block.fail_fast,
            total=total,
            filed=len(self.envelopes),
            index=index,
            key=envelope.key,
            status=envelope.status,
        )
        if decision is not None:
            self.decide(decision)
        elif len(self.envelopes) == total:
            self.settle()

    def decide(self, decision: Decision) -> None:
        if self.decision is None and not self.settled():
            self.decision = decision
            self.settle()

    def settled(self) -> bool:
        return self.done is not None and self.done.done()

    def settle(self) -> None:
        if self.done is None or self.done.done():
            return
        try:
            result = settle_block(
                self.block,
                self.envelopes,
                self.reducers,
                executed_on=self.executed_on,
                decision=self.decision,
                started=dict.fromkeys(self.running),
            )
            if self.block.strategy == ParallelStrategy.MAP_REDUCE:  # a reducer's value, as the store gives it back
                result = ParallelExecutionResult.from_dict(json.loads(json.dumps(result.to_dict())))
        except Exception as exc:  # noqa: BLE001 - run() raises it (settle runs from a timer too: never a hang)
            self.fail(exc)
        else:
            self.done.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)


def _copier(context: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
    """A function giving each step a context of its own, sharing no object with another step's: a copy of the
    keys when each value is immutable or an empty dict or list (``outputs`` of a lone block), else a JSON round
    trip (as a message to a worker would make it)."""
    if all(type(value) in PLAIN or (type(value) in (dict, list) and not value) for value in context.values()):
        flat = dict(context)
        empties = [key for key, value in flat.items() if type(value) in (dict, list)]
        if not empties:
            return lambda: dict(flat)

        def copied() -> dict[str, Any]:
            fresh = dict(flat)
            for key in empties:
                fresh[key] = type(flat[key])()
            return fresh

        return copied
    text = json.dumps(context)
    return lambda: json.loads(text)  # type: ignore[no-any-return]
