"""Steps run in this process, on asyncio, through the conductor: the local executor's, and the ones a
``fallback_to_local`` pool runs where they were published.

Each step goes through the engine's rules as on a worker: the start guard
(``not_started`` once its block is decided), its retries (``retry.retry_countdown``),
then its outcome is filed and what follows is done. ``async def`` steps are
awaited on the running loop; sync ones run in a thread. A step that runs past its
hard limit (``timeout_seconds`` plus ``HARD_LIMIT_GRACE``, as Celery's prefork
hard limit) is filed as failed with ``StepTimeout``; a sync one cannot be
interrupted and finishes in its thread, unheeded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import StepTimeout, UnknownTarget
from ..plan.message import StepMessage
from ..registry import StepDef
from ..routing.policy import HARD_LIMIT_GRACE
from .conductor import Conductor
from .retry import retry_countdown
from .runner import StepOutcome, call_async_step, call_step


class LocalSteps:
    """Runs step messages in this process and files them through ``conductor``.

    Args:
        conductor: the engine (its registry has the step functions).
        worker: the name results report as where each step ran.
        executed_on: what each step's envelope says (``"local"``).
        threads: where sync steps run.
        after: called after each call into the engine (the local executor looks whether its run ended).
    """

    def __init__(
        self,
        conductor: Conductor,
        worker: str,
        executed_on: str,
        threads: ThreadPoolExecutor,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self.conductor = conductor
        self.worker = worker
        self.executed_on = executed_on
        self.threads = threads
        self.after = after

    async def run(self, message: StepMessage) -> None:
        """One step, as a worker runs it: the start guard, its retries, then filed."""
        definition = self.conductor.registry.step(message.target)
        if definition is None:  # check_plan refused it already, unless the registry changed since
            raise UnknownTarget(f"target {message.target!r} is not registered in this process")
        control = self.conductor.control(message)
        attempt = 0
        while True:
            if not control.start(message.index, self.worker, self.executed_on, os.getpid(), ""):
                self.conductor.follow_up(self.conductor.skip(message, self.worker, "").follow_up)
                self.after()
                return
            outcome = await self.call(definition, message, control.asked_to_stop)
            delay = retry_countdown(message, outcome.status, attempt, control.stop_requested)
            if delay is None:
                break
            await asyncio.sleep(delay)
            attempt += 1
        outcome.attempts = attempt + 1
        self.file(message, outcome)

    def file(self, message: StepMessage, outcome: StepOutcome) -> None:
        """File ``outcome`` and do what follows."""
        outcome.executed_on = self.executed_on
        self.conductor.follow_up(self.conductor.file(message, outcome))
        self.after()

    async def call(self, definition: StepDef, message: StepMessage, should_stop: Callable[[], bool]) -> StepOutcome:
        """A sync step in a thread, an ``async def`` step awaited here; bounded by the step's hard limit."""
        called: Awaitable[StepOutcome]
        if definition.is_async:
            called = call_async_step(definition, message, self.worker, should_stop)
        else:
            loop = asyncio.get_running_loop()
            called = loop.run_in_executor(self.threads, call_step, definition, message, self.worker, "", should_stop)
        limit = message.timeout_seconds
        if limit is None:
            return await called
        try:
            return await asyncio.wait_for(called, limit + HARD_LIMIT_GRACE)
        except asyncio.TimeoutError as exc:
            late = StepTimeout(
                f"step {message.key!r} ran past its timeout_seconds ({limit}s) and its hard limit "
                f"({HARD_LIMIT_GRACE:g}s later)"
            )
            late.__cause__ = exc
            return StepOutcome.failure(message.key, late, worker=self.worker)
