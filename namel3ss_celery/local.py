"""The local executor: a run's plan in this process, on asyncio, with the Celery path's semantics.

A node starts when the nodes it depends on have completed; independent nodes
run concurrently, and so do a block's steps (``async def`` steps awaited on the
event loop, sync ones in a thread). The pieces are the workers' own: steps go
through ``call_step``, blocks are decided by ``decide_after`` (race,
any_success, fail_fast) and their deadline, settled by ``settle_block``, and
the run moves on through ``node_settled``, all on a private ``MemoryStore``.
Results are the Celery path's, with ``metadata["executed_on"] == "local"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .compiler import check_plan
from .compiler.steps import step_payload
from .errors import SpecError, StepResultError, UnknownTarget
from .registry import Registry, StepDef, StepFunction
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .settings import DEFAULT_EXPIRES
from .worker.control import BlockControl, Decision, decide_after
from .worker.nodes import node_context, retry_delay, with_fan_out
from .worker.plan import Plan, PlanNode, node_settled, run_result
from .worker.runner import StepOutcome, _cancel_check, _watched, call_step, throttled, to_json_data
from .worker.settle import settle_block
from .worker.store import MemoryStore

RunResult = ParallelExecutionResult | WorkflowResult

EXECUTED_ON = "local"
DEADLINE = "the block's deadline (timeout_seconds) passed"  # as n3.settle.deadline decides it
NOT_STARTED = "not started: its block was already decided"  # as a worker skips a step


class LocalExecutor:
    """Runs plans in this process on asyncio, as Celery workers would run them.

    Args:
        registry: where targets and reducers are found (``n3.registry``); nothing a spec names is imported.
        step_modules: the modules whose ``module:function`` targets may run (``NAMEL3SS_CELERY_STEP_MODULES``),
            already imported into ``registry`` (``import_step_modules``).
        ttl: seconds a run's private record lives.
    """

    def __init__(self, registry: Registry, *, step_modules: Sequence[str] = (), ttl: int = DEFAULT_EXPIRES) -> None:
        self.registry = registry
        self.step_modules = tuple(step_modules)
        self.ttl = ttl
        self.worker = f"local@{socket.gethostname()}"

    def run_sync(self, plan: Plan, context: Mapping[str, Any] | None = None) -> RunResult:
        """``run`` for code with no event loop running (it uses ``asyncio.run``)."""
        return asyncio.run(self.run(plan, context))

    async def run(self, plan: Plan, context: Mapping[str, Any] | None = None) -> RunResult:
        """Run ``plan`` and return its result, whatever its final status, as soon as the run is decided.

        Steps still running then (losers of a decided block, nodes beside a failed one) are cancelled;
        sync ones cannot be interrupted and finish in their threads.

        Args:
            plan: what to run (``n3.plan(spec)`` or ``make_plan``).
            context: JSON data every step receives as its ``context``.

        Returns:
            A block run's ``ParallelExecutionResult``, or a workflow's or program's ``WorkflowResult``.

        Raises:
            SpecError: ``context`` is not JSON data.
            CompileError: what ``dispatch`` refuses (unknown targets or reducers, fields not supported yet),
                refused before any step runs.
        """
        check_plan(plan, self.registry, self.step_modules)
        try:
            initial = to_json_data(dict(context or {}), "context")
        except StepResultError as exc:
            raise SpecError(str(exc), path="context") from None
        return await _LocalRun(self, plan, initial).go()


class _LocalRun:
    """One run: its private store, and the asyncio tasks of its nodes and steps."""

    def __init__(self, executor: LocalExecutor, plan: Plan, context: dict[str, Any]) -> None:
        self.executor, self.plan, self.run_id, self.store = executor, plan, uuid.uuid4().hex, MemoryStore()
        self.record = {
            "kind": plan.kind,
            "name": plan.name,
            "context": json.dumps(context),
            "status": str(RunStatus.RUNNING),
            "created": repr(time.time()),
        }
        self.store.create_run(self.run_id, self.record, executor.ttl)
        self.nodes: dict[asyncio.Task[ParallelExecutionResult], PlanNode] = {}
        self.background: set[asyncio.Task[Any]] = set()  # steps (and refreshes) that outlive their node's settle
        # Sync steps run here; the run does not wait for ones it gave up on (losers, timed-out steps).
        self.threads = ThreadPoolExecutor(thread_name_prefix="namel3ss-local")

    async def go(self) -> RunResult:
        order = {n.name: i for i, n in enumerate(self.plan.nodes)}
        claim = self.store.claim
        self.launch(
            [n for n in self.plan.nodes if not n.depends_on and claim(self.run_id, f"node:{n.name}:launched")], {}
        )
        try:
            while self.nodes:
                done, _ = await asyncio.wait(self.nodes, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: order[self.nodes[t].name]):  # plan order, not chance
                    node = self.nodes.pop(task)
                    advance = node_settled(
                        self.store, self.run_id, self.plan, node.name, task.result(), self.executor.ttl
                    )
                    if advance.final is not None:
                        return advance.final
                    self.launch(advance.launch, advance.outputs)
        finally:  # the run is decided: nothing of it goes on
            pending = [*self.nodes, *self.background]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.threads.shutdown(wait=False, cancel_futures=True)
        return run_result(self.plan, self.run_id, self.record, {}, {}, failed_node=None)  # a plan of no nodes

    def launch(self, nodes: list[PlanNode], outputs: dict[str, Any]) -> None:
        for node in nodes:  # claimed as launched, by go() or node_settled
            self.nodes[asyncio.create_task(self.run_node(node, node_context(self.record, outputs)))] = node

    async def run_node(self, node: PlanNode, context: dict[str, Any]) -> ParallelExecutionResult:
        """Start the block's steps (``max_concurrency`` at a time); settle once decided or all reported."""
        try:
            node = with_fan_out(node, context)
        except SpecError as exc:
            failure = Decision(RunStatus.FAILED, None, str(exc))
            return settle_block(node.block, {}, self.executor.registry, executed_on=EXECUTED_ON, decision=failure)
        block, control, woken = node.block, BlockControl(self.store, self.run_id, node.name), asyncio.Event()
        definitions = [_definition(self.executor.registry, step.target) for step in block.steps]
        window = asyncio.Semaphore(block.max_concurrency or max(len(block.steps), 1))
        steps = [
            asyncio.create_task(self.run_step(node, i, definitions[i], context, control, window, woken))
            for i in range(len(block.steps))
        ]
        self.background.update(steps)
        timer = None
        if block.timeout_seconds is not None:
            timer = asyncio.get_running_loop().call_later(block.timeout_seconds, self.deadline, control, woken)
        try:
            if steps:
                await woken.wait()
        finally:
            if timer is not None:
                timer.cancel()
        for step in steps:
            if step.done() and not step.cancelled() and step.exception() is not None:
                step.result()
        result = self.settle(node, control)
        if control.decision() is not None and not all(s.done() for s in steps):
            self.background.add(asyncio.create_task(self.refresh(node, control, steps)))
        return result

    async def run_step(
        self,
        node: PlanNode,
        index: int,
        definition: StepDef,
        context: dict[str, Any],
        control: BlockControl,
        window: asyncio.Semaphore,
        woken: asyncio.Event,
    ) -> None:
        """One step as a worker runs it: skipped once decided, retried per ``retry_failed``, then filed."""
        block = node.block
        # A JSON round trip, as a message to a worker makes: no step shares an object with another.
        payload = json.loads(json.dumps(step_payload(block, index, self.run_id, node.name, context, "local", False)))
        fed = block.max_concurrency is not None and index >= block.max_concurrency
        try:
            async with window:  # a step files before its slot goes to the next, as a worker feeds the next
                attempt = 0
                while True:
                    if not control.start(index, self.executor.worker, EXECUTED_ON, os.getpid(), ""):
                        if fed and attempt == 0:
                            return  # a fed step is never published once its block is decided
                        now, worker = time.time(), self.executor.worker
                        args = (payload["key"], "cancelled", None, NOT_STARTED, None, now, now, worker, "")
                        outcome = StepOutcome(*args, outcome="not_started")
                        break
                    outcome = await self.call(definition, payload, control)
                    if outcome.status != "failed" or attempt >= payload["retries"] or control.stop_requested():
                        break
                    await asyncio.sleep(retry_delay(attempt))
                    attempt += 1
                self.file(node, index, outcome, control, woken)
        except Exception:
            woken.set()  # a fault of the executor itself: the node raises it rather than wait forever
            raise

    async def call(self, definition: StepDef, payload: dict[str, Any], control: BlockControl) -> StepOutcome:
        """``call_step``: a sync step in a thread; an ``async def`` step awaited here and handed to it."""
        if not definition.is_async:
            args = (definition, payload, self.executor.worker, "", control.stop_requested)
            return await asyncio.get_running_loop().run_in_executor(self.threads, call_step, *args)
        check = throttled(control.stop_requested)
        token, start = _cancel_check.set(check), time.time()
        try:
            value = await _watched(definition.function(dict(payload["step"]), dict(payload["context"])), check)
            replay = _returning(value)
        except Exception as exc:  # noqa: BLE001 - handed to call_step, which makes it the step's failure
            replay = _raising(exc)
        finally:
            _cancel_check.reset(token)
        outcome = call_step(StepDef(definition.target, replay), payload, self.executor.worker, "")
        outcome.start = start
        return outcome

    def file(
        self, node: PlanNode, index: int, outcome: StepOutcome, control: BlockControl, woken: asyncio.Event
    ) -> None:
        """File the envelope and decide the block as ``Conductor.file`` does; wake the node when it can settle."""
        block, prior = node.block, control.decision()
        if prior is not None and outcome.outcome is None:
            outcome.outcome = "stopped" if outcome.status == "cancelled" else "ran_to_end"
        filed = self.store.record_step(self.run_id, node.name, index, outcome.envelope(), self.executor.ttl)
        if prior is None:
            total = len(block.steps)
            decision = decide_after(block.strategy, block.fail_fast, total, filed, index, outcome.key, outcome.status)
            if decision is not None:
                control.decide(decision)
        if filed >= len(block.steps) or control.decision() is not None:
            woken.set()

    def deadline(self, control: BlockControl, woken: asyncio.Event) -> None:
        if not woken.is_set() and control.decide(Decision(RunStatus.TIMEOUT, None, DEADLINE)):
            woken.set()

    def settle(self, node: PlanNode, control: BlockControl) -> ParallelExecutionResult:
        envelopes, record = self.store.step_envelopes(self.run_id, node.name), self.store.run_record(self.run_id)
        return settle_block(
            node.block,
            envelopes,
            self.executor.registry,
            executed_on=EXECUTED_ON,
            decision=control.decision(),
            started=control.started(record or {}),
        )

    async def refresh(self, node: PlanNode, control: BlockControl, steps: list[asyncio.Task[None]]) -> None:
        """Once every loser of a decided block reported, its result says what each did (``refresh_node``)."""
        await asyncio.gather(*steps)
        if len(self.store.step_envelopes(self.run_id, node.name)) >= len(node.block.steps):
            result = json.dumps(self.settle(node, control).to_dict())
            self.store.set_fields(self.run_id, {f"node:{node.name}:result": result})


def _definition(registry: Registry, target: str | None) -> StepDef:
    definition = registry.step(target or "")
    if definition is None:  # check_plan refused it already, unless the registry changed since
        raise UnknownTarget(f"unknown target {target!r}")
    return definition


def _returning(value: Any) -> StepFunction:
    return lambda step, context: value


def _raising(exc: Exception) -> StepFunction:
    def replay(step: dict[str, Any], context: dict[str, Any]) -> Any:
        raise exc

    return replay
