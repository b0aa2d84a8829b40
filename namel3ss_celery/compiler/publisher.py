"""The Celery publisher: the engine's port to Celery. It compiles a node into canvas and sends it.

``Conductor`` decides what to publish; this module knows how: the pool queues
and dead-letter queues to declare first, the canvas itself (``publish.publish_canvas``), and the steps a
``fallback_to_local`` pool runs in this process because no worker consumes its
queue (through the engine, as the local executor runs steps: ``LocalSteps``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from weakref import WeakKeyDictionary

from celery import canvas
from celery.utils.nodenames import worker_direct

from ..engine.conductor import Conductor
from ..engine.local_steps import LocalSteps
from ..engine.ports import Launching
from ..engine.runner import StepOutcome, run_coroutine
from ..errors import RoutingError, UnknownTarget
from ..gc_pause import collection_resumed
from ..plan import fields
from ..plan.kinds import Join
from ..plan.message import CONTEXT_INLINE_LIMIT, FedStep, StepMessage, StoredContext
from ..plan.model import Plan, PlanNode, PoolRoute
from ..registry import STEP_TASK_PREFIX
from ..routing.allowed import refusal
from ..routing.fallback import fallback_steps
from ..routing.queues import declare_queue
from ..spec import step_key
from . import compile_node
from .publish import publish_canvas
from .steps import step_message

logger = logging.getLogger("namel3ss_celery")


@dataclass
class PreparedCanvas:
    """A node compiled for Celery: its canvas, its feed, its deadline, and the steps this process runs."""

    canvas: canvas.Signature
    feed: list[str]
    deadline: float | None
    context: dict[str, Any]
    local: frozenset[int]  # fallback_to_local steps no worker would take


class CeleryPublisher:
    """``Publisher`` on a Celery app."""

    def __init__(self, app: Any, conductor: Conductor) -> None:
        self.app = app
        self.conductor = conductor

    def prepare_node(self, run_id: str, plan: Plan, node: PlanNode, context: dict[str, Any]) -> PreparedCanvas:
        declare_pool_queues(self.app, plan.pools)
        local_context = context  # fallback_to_local steps run here, with the context itself
        context = self._stored(run_id, node.name, context)
        local = fallback_steps(self.app, node.block, plan.pools)
        launch = compile_node(self.app, node, run_id, context, plan.pools, skip=local)
        return PreparedCanvas(launch.canvas, launch.feed, launch.deadline, local_context, local)

    def _stored(self, run_id: str, node: str, context: dict[str, Any]) -> dict[str, Any]:
        """A context too large to copy into every step message is stored once in the run's record; the
        messages carry its reference (``StoredContext``), which workers read once per node."""
        text = json.dumps(context)
        if len(text) <= CONTEXT_INLINE_LIMIT:
            return context
        self.conductor.store.set_fields(run_id, {fields.node_context(node): text})
        return StoredContext(node)

    def send_node(
        self, run_id: str, plan: Plan, node: PlanNode, prepared: PreparedCanvas, launching: Launching
    ) -> None:
        publish_canvas(self.app, prepared.canvas, launching)
        if prepared.local:
            logger.warning(
                "no worker consumes the queue of steps %s of block %s: running them here",
                sorted(prepared.local),
                node.name,
            )
            self.run_here(run_id, node, prepared.context, sorted(prepared.local), plan, prepared.deadline)

    def send_fed(self, item: FedStep) -> None:
        options: dict[str, Any] = {"queue": item.queue} if item.queue else {}
        expires_at = item.message.expires(time.time())  # it starts waiting now
        if expires_at is not None:
            options["expires"] = datetime.fromtimestamp(expires_at, tz=timezone.utc)
        self.app.signature(STEP_TASK_PREFIX + item.target, args=(item.message.encode(),), immutable=True).apply_async(
            **options
        )

    def terminate(self, task_id: str) -> None:
        self.app.control.revoke(task_id, terminate=True, signal=signal.SIGTERM)

    def run_here(
        self,
        run_id: str,
        node: PlanNode,
        context: dict[str, Any],
        indexes: list[int],
        plan: Plan,
        deadline: float | None,
    ) -> None:
        """fallback_to_local: run steps in this process, through the engine as the local executor runs them,
        each bounded by its time limit; return once each is filed.

        Whatever goes wrong with one step (its message, its target, the pool's allowed targets) fails that
        step, so its block still ends.
        """
        where = f"local@{socket.gethostname()}"
        runnable: list[StepMessage] = []
        for index in indexes:
            step = node.block.steps[index]
            try:
                message = step_message(
                    node.block,
                    index,
                    run_id=run_id,
                    node=node.name,
                    context=context,
                    join=Join.COUNT,
                    deadline=deadline,
                    pools=plan.pools,
                )
                self._check_here(message, step.worker_pool, plan.pools.get(step.worker_pool or ""))
            except Exception as exc:  # noqa: BLE001 - a step that cannot run here fails, and its block goes on
                logger.exception("step %s of block %s cannot run here", step_key(step, index), node.name)
                self._fail_here(run_id, node, index, deadline, exc, where)
                continue
            runnable.append(message)
        if runnable:
            with collection_resumed():  # user code: the collector runs, even while dispatch publishes
                run_coroutine(self._run_here(runnable, where))

    async def _run_here(self, messages: list[StepMessage], where: str) -> None:
        threads = ThreadPoolExecutor(thread_name_prefix="namel3ss-fallback")
        steps = LocalSteps(self.conductor, where, "local", threads)
        try:
            outcomes = await asyncio.gather(*(steps.run(m) for m in messages), return_exceptions=True)
        finally:
            threads.shutdown(wait=False, cancel_futures=True)
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Exception):  # it could not run here (its target is gone): it fails
                logger.error("step %s of block %s could not run here: %s", message.key, message.node, outcome)
                steps.file(message, StepOutcome.failure(message.key, outcome, worker=where))
            elif isinstance(outcome, BaseException):
                raise outcome

    def _check_here(self, message: StepMessage, pool: str | None, route: PoolRoute | None) -> None:
        """What a worker of the pool would refuse, refused here too."""
        if self.conductor.registry.step(message.target) is None:
            raise UnknownTarget(f"target {message.target!r} is not registered in this process")
        if route is not None:
            refused = refusal(str(pool), message.kind, message.target, route.allowed_tools, route.allowed_agents)
            if refused is not None:
                raise RoutingError(refused)

    def _fail_here(
        self, run_id: str, node: PlanNode, index: int, deadline: float | None, exc: BaseException, where: str
    ) -> None:
        step = node.block.steps[index]
        message = StepMessage(  # enough to file a failure, when the full message could not be made
            run=run_id,
            node=node.name,
            index=index,
            total=len(node.block.steps),
            key=step_key(step, index),
            join=Join.COUNT,
            strategy=node.block.strategy,
            step={"target": step.target},
            context={},
            fail_fast=node.block.fail_fast,
            deadline=deadline,
        )
        outcome = StepOutcome.failure(message.key, exc, worker=where)
        outcome.executed_on = "local"
        self.conductor.follow_up(self.conductor.file(message, outcome))


_DECLARED_DEAD_LETTERS: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()  # per app, once per process


def declare_pool_queues(app: Any, pools: Mapping[str, PoolRoute]) -> None:
    """Make the app know each pool queue with its arguments (RabbitMQ's ``x-max-priority``) before publishing,
    so the broker declares it as the pool's workers do; declare each dead-letter queue on the broker now.

    A dead-letter queue must exist before a step can fail: RabbitMQ drops a message dead-lettered to an
    exchange with no queue bound. It is declared, not added to ``app.amqp.queues``, so that no worker
    started later in this process consumes it.
    """
    for route in pools.values():
        if route.queue not in app.amqp.queues:
            queue = worker_direct(route.affinity) if route.affinity else declare_queue(route.queue, route.arguments)
            app.amqp.queues.add(queue)
    declared = _DECLARED_DEAD_LETTERS.setdefault(app, set())
    missing = sorted({r.dead_letter for r in pools.values() if r.dead_letter} - declared)
    if missing:
        with app.connection_for_write() as connection:
            for name in missing:
                declare_queue(name, {})(connection.default_channel).declare()  # type: ignore[no-untyped-call]
        declared.update(missing)
