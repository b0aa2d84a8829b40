"""A step is held in its worker's name as a pool process takes it, before Celery acknowledges its message.

Under default delivery Celery acknowledges a step's message in the worker's main process as a pool
process takes the step, a moment before the step reaches its start guard (where it is held in its
worker's name until filed, ``engine.lost``). A worker killed whole in that moment would take the step
down unrecorded: the broker no longer has it, the store never heard of it, and a block without a
deadline would wait for ever. So the step's request holds it first, naming the pool process that took
it (the same member the start guard writes, which then holds it again or, refusing it, lets it go):
should the worker stop answering, another worker's watchdog files the step as lost and its block ends.

Only where a pool process of its own takes the step (prefork): in a pool that runs steps in the worker's
own process (threads, solo, gevent), the thread that acknowledges a step goes on to its start guard at once,
and the moment between the two is that one store call.

A sticky step (a pool's ``sticky_key``) is held from its start guard on only: it may be sent on to the
worker that has its key, unstarted, and a hold landing after that would name a step this worker never runs.

One quick store call per step in the main process; when the store does not answer within about a second
the step is acknowledged unheld (logged), and is held from its start guard on, as before; the next steps
for a few seconds too, without asking.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from celery.utils.imports import symbol_by_name

from ..engine.conductor import Conductor
from ..engine.control import delivery_of
from ..engine.lost import held
from ..plan.message import StepMessage
from .watchdog import INCARNATION

logger = logging.getLogger("namel3ss_celery")


AWAY_FOR = 5.0  # seconds steps are not held before their acknowledgement after the store did not answer


def step_request_class(task_class: Any, conductor: Conductor) -> type:
    """The request class of the step tasks: the app's own (``task_class.Request``), holding each step
    before its message is acknowledged."""
    base: Any = symbol_by_name(task_class.Request)
    taker = Taker(conductor)

    class StepRequest(base):  # type: ignore[misc, valid-type]
        def on_accepted(self, pid: int, time_accepted: float) -> None:
            # Acknowledged late, the broker has it until it ends: nothing to hold. Taken by this process (threads,
            # solo, gevent), the thread that runs it goes on to its start guard at once: holding it first would
            # add a store call to every step's start, and change which of a block's steps start first.
            if not self.task.acks_late and pid != os.getpid():
                taker.hold(self.args, self.hostname or "", pid, delivery_of(self.id, self.request_dict.get("retries")))
            super().on_accepted(pid, time_accepted)

    return StepRequest


class Taker:
    """Holds taken steps for one worker's main process; after the store did not answer, it does not ask
    again for ``AWAY_FOR`` seconds (each step would wait up to a second for it, in the loop that
    acknowledges and hands out the others)."""

    def __init__(self, conductor: Conductor, clock: Callable[[], float] = time.monotonic) -> None:
        self.conductor = conductor
        self.clock = clock
        self._away_until = 0.0

    def hold(self, args: Any, worker: str, pid: int, delivery: str) -> bool:
        """Hold the step whose task arguments are ``args``, taken by process ``pid`` of ``worker`` in
        ``delivery`` (its task id and retries); True when held. Never raises: the message is acknowledged
        next, held or not."""
        if self.clock() < self._away_until:  # the store did not answer a moment ago: not asked again yet
            return False
        message = StepMessage.routing(args[0]) if isinstance(args, (list, tuple)) and args else None
        holding = held(message, worker, self.conductor.ttl, pid, INCARNATION) if message is not None else None
        if message is None or holding is None:  # not a step message of ours, or redelivered when lost
            return False
        if message.sticky is not None:  # it may be sent on to its key's worker unstarted: held from its start
            return False
        try:
            return self.conductor.control(message).take(message.index, holding, delivery)
        except Exception as exc:  # noqa: BLE001 - the step is still held from its start guard on
            self._away_until = self.clock() + AWAY_FOR
            logger.warning(
                "steps are not held before their messages are acknowledged for %gs (%s: %s); each is held from "
                "its start on",
                AWAY_FOR,
                type(exc).__name__,
                exc,
            )
            return False
