"""A step is held in its worker's name from the moment the worker takes it, before its message is acknowledged.

Under default delivery Celery acknowledges a step's message when a pool process takes it
(``Request.on_accepted``), a moment before the step reaches its start guard, where it used to be held
first. A worker killed whole in that moment took the step down with it and left no trace: its block
waited for it at its deadline, or for ever without one. Here the worker's main process holds the step in
the coordination store (``engine.lost.held``) and only then acknowledges it; should the worker stop
answering before the step files its outcome, another worker's watchdog files it as lost and its block
ends. Under at_least_once (late acknowledgement) nothing is held: the broker delivers the step again.

It costs one store round trip in the worker's main process per step (about 0.1 ms of CPU), so it is made
only for steps whose block has no deadline: a block with one ends at it, whatever its worker took down.

The step task's ``Request`` class (Celery's documented hook for custom requests) does it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request
from kombu.utils.imports import symbol_by_name

from ..engine.conductor import Conductor
from ..engine.lost import held
from ..errors import StoreUnavailable
from ..plan.message import StepMessage

logger = logging.getLogger("namel3ss_celery")


def holding_request(conductor: Conductor, base: Any = Request) -> type[Request]:
    """The ``Request`` class of step tasks (a subclass of ``base``, the app's own task class's request class or
    its name): holds each step in the store before Celery acknowledges it."""

    class HoldingRequest(symbol_by_name(base)):  # type: ignore[misc]
        def on_accepted(self, pid: int, time_accepted: float) -> None:
            if not self.task.acks_late:
                hold_taken(conductor, self.args, self.hostname or "", pid)
            super().on_accepted(pid, time_accepted)

    return HoldingRequest


def hold_taken(conductor: Conductor, args: Any, worker: str, pid: int) -> None:
    """Hold the step ``args`` carries in ``worker``'s name, run by its process ``pid``; a store that does not
    answer is logged (the step then runs unheld until its start guard holds it, as before this hold existed)."""
    message = StepMessage.routing(args[0]) if isinstance(args, (list, tuple)) and args else None
    if message is None or message.deadline is not None:
        return  # a block with a deadline ends at it whatever was lost: no round trip before the ack for it
    holding = held(message, worker, conductor.ttl, pid)
    if holding is None:
        return
    try:
        conductor.store.hold(holding)
    except StoreUnavailable as exc:
        logger.warning(
            "step %s of run %s was taken without being held (%s): if worker %s dies before the step starts, "
            "its block ends only at its deadline",
            message.key,
            message.run,
            exc,
            worker,
        )
