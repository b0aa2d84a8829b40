"""The local executor: the engine in this process, on asyncio, with the Celery path's semantics.

It is the same engine as on Celery workers (``engine.Conductor``: start guard,
decide, file, settle, advance, deadlines, cancel) with two other ports: a
private ``MemoryStore`` and a publisher that runs each step as an asyncio task
(``async def`` steps awaited on the event loop, sync ones in a thread) instead
of sending a Celery message. Results are the Celery path's, with
``metadata["executed_on"] == "local"``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .compiler.checks import check_plan
from .compiler.steps import step_message
from .engine.advance import final_result, run_result
from .engine.conductor import Conductor
from .engine.decide import TIMED_OUT
from .engine.inline import InlineBlock, InlineCall
from .engine.local_steps import LocalSteps
from .engine.ports import Launching
from .engine.values import to_json_data
from .errors import SpecError, StepResultError
from .plan import fields
from .plan.kinds import Join
from .plan.message import FedStep, StepMessage
from .plan.model import Plan, PlanNode
from .registry import Registry
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .settings import DEFAULT_EXPIRES
from .spec import ParallelBlockSpec
from .spec.context import context_mapping
from .worker.store import MemoryStore

RunResult = ParallelExecutionResult | WorkflowResult

EXECUTED_ON = "local"


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
            SpecError: ``context`` is not a mapping of JSON data (``.path`` names where).
            CompileError: what ``dispatch`` refuses (unknown targets or reducers, fields not supported yet),
                refused before any step runs.
        """
        check_plan(plan, self.registry, self.step_modules)
        return await _LocalRun(self, plan, initial_context(context)).go()

    async def run_inline(
        self, block: ParallelBlockSpec, call: InlineCall, context: Mapping[str, Any] | None = None
    ) -> ParallelExecutionResult:
        """``run`` for one block whose every step is ``await call(index, context)`` in this process, on the engine's
        rules without its store and messages (``engine.inline``; ``engine.inline.fits`` says which blocks can):
        checked as ``run`` checks, and the same result.

        Raises:
            SpecError, CompileError: as ``run``.
        """
        check_plan(Plan("block", block.name, (PlanNode(block.name, block),)), self.registry, self.step_modules)
        inline = InlineBlock(
            block,
            call,
            initial_context(context),  # what a lone block's steps get: the context given, each a copy of its own
            self.registry,
            worker=self.worker,
            executed_on=EXECUTED_ON,
            run_id=uuid.uuid4().hex,
        )
        return await inline.run()


def initial_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The context a run starts with: a mapping of JSON data, copied.

    Raises:
        SpecError: it is not one (``.path`` names where).
    """
    try:
        return to_json_data(context_mapping(context), "context")  # type: ignore[no-any-return]
    except StepResultError as exc:
        raise SpecError(str(exc), path="context") from exc


@dataclass
class _LocalNode:
    """A node made ready by the local publisher (the engine's ``PreparedNode``)."""

    first: list[StepMessage]
    feed: list[str] = field(default_factory=list)
    deadline: float | None = None


class _LocalRun:
    """One run: its private store and conductor, and the asyncio tasks of its steps (the engine's publisher)."""

    def __init__(self, executor: LocalExecutor, plan: Plan, context: dict[str, Any]) -> None:
        self.executor, self.plan, self.run_id = executor, plan, uuid.uuid4().hex
        self.store = MemoryStore()
        self.conductor = Conductor(lambda: self.store, self, executor.registry, executor.ttl, EXECUTED_ON)
        self.record = {
            fields.KIND: plan.kind,
            fields.NAME: plan.name,
            fields.PLAN: plan.to_json(),
            fields.CONTEXT: json.dumps(context),
            fields.STATUS: str(RunStatus.RUNNING),
            fields.CREATED: repr(time.time()),
        }
        self.store.create_run(self.run_id, self.record, executor.ttl)
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: list[asyncio.TimerHandle] = []
        self.ended = asyncio.Event()
        self.fault: BaseException | None = None
        # Sync steps run here; the run does not wait for ones it gave up on (losers, timed-out steps).
        self.threads = ThreadPoolExecutor(thread_name_prefix="namel3ss-local")
        self.steps = LocalSteps(self.conductor, executor.worker, EXECUTED_ON, self.threads, self.look)

    async def go(self) -> RunResult:
        if not self.plan.nodes:
            return run_result(self.plan, self.run_id, self.record, {}, {}, failed_node=None)
        try:
            self.engine(self.conductor.launch_roots, self.run_id)
            await self.ended.wait()
            if self.fault is not None:
                raise self.fault
            result = final_result(self.store.run_record(self.run_id) or {})
            if result is None:  # ended is set only once the run is done, or on a fault
                raise LookupError(f"run {self.run_id} ended without a result")
            return result
        finally:  # the run is decided: nothing of it goes on
            for timer in self.timers:
                timer.cancel()
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.threads.shutdown(wait=False, cancel_futures=True)

    def engine(self, call: Callable[..., object], *args: Any) -> None:
        """Call into the engine, then see whether the run ended."""
        call(*args)
        self.look()

    def look(self) -> None:
        """End the wait once the run is done."""
        (done,) = self.store.get_fields(self.run_id, [fields.DONE])
        if done == "1":
            self.ended.set()

    # --- the engine's Publisher port -----------------------------------------------

    def prepare_node(self, run_id: str, plan: Plan, node: PlanNode, context: dict[str, Any]) -> _LocalNode:
        block = node.block
        deadline = time.time() + block.timeout_seconds if block.timeout_seconds else None
        window = block.max_concurrency
        fed = window is not None and window < len(block.steps)

        def message(index: int) -> StepMessage:
            return step_message(
                block,
                index,
                run_id=run_id,
                node=node.name,
                context=context,
                join=Join.COUNT,
                feed=fed,
                deadline=deadline,
            )

        def copied(made: StepMessage) -> StepMessage:
            # A JSON round trip, as a message to a worker makes: no step shares an object with another.
            return StepMessage.decode(json.loads(json.dumps(made.encode())))

        count = window if fed and window is not None else len(block.steps)
        prepared = _LocalNode([copied(message(i)) for i in range(count)], deadline=deadline)
        # The feed holds them encoded (each decoded as it is sent): a copy already.
        prepared.feed = [
            FedStep(str(block.steps[i].target), message(i)).encode() for i in range(count, len(block.steps))
        ]
        return prepared

    def send_node(self, run_id: str, plan: Plan, node: PlanNode, prepared: _LocalNode, launching: Launching) -> None:
        if prepared.deadline is not None:
            delay = max(0.0, prepared.deadline - time.time())
            loop = asyncio.get_running_loop()
            self.timers.append(loop.call_later(delay, self.on_deadline, node.name))
        for message in prepared.first:
            self.start(message)

    def send_fed(self, item: FedStep) -> None:
        self.start(item.message)

    def terminate(self, task_id: str) -> None:
        """Nothing to terminate: local steps stop when asked (``cancelled()``) or are cancelled at the end."""

    # --- steps -------------------------------------------------------------------

    def start(self, message: StepMessage) -> None:
        task = asyncio.get_running_loop().create_task(self.run_step(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_deadline(self, node: str) -> None:
        self.guarded(self.conductor.decide_and_settle, self.run_id, node, TIMED_OUT)

    def guarded(self, call: Callable[..., object], *args: Any) -> None:
        """``engine``, where a fault of the engine itself ends the run with it rather than a hang."""
        try:
            self.engine(call, *args)
        except Exception as exc:  # noqa: BLE001 - raised by go(), in the caller's frame
            self.fault = exc
            self.ended.set()

    async def run_step(self, message: StepMessage) -> None:
        try:
            await self.steps.run(message)
        except Exception as exc:  # noqa: BLE001 - a fault of the executor itself: go() raises it, never waits
            self.fault = exc
            self.ended.set()
