"""Steps whose worker stopped answering: each worker's watchdog renews a heartbeat in the store, and every
step it runs (outside at_least_once, where the broker delivers a lost step again) is held in its name until
the step files its outcome. When a worker's heartbeat runs out, any other worker's watchdog files each step
it still held as failed, naming the worker, so their blocks end.

A held step also names the process that runs it and the incarnation of its worker (a token each start of a
worker makes): when that process has ended with the step still held (a pool process killed, or recycled
while it kept outcomes for a store that was down) and its worker lives on, or the worker itself was
restarted under the same name since (a container restarted, whose new processes may reuse the old pids),
the worker's own watchdog files the step as lost.
"""

from __future__ import annotations

import json

from ..errors import DecodeError
from ..plan.kinds import Join
from ..plan.message import StepMessage
from ..spec import ParallelStrategy
from .ports import Held

HEARTBEAT_TTL = 15  # seconds a worker's heartbeat lasts; its watchdog renews it every second


def held(message: StepMessage, worker: str, ttl: int, pid: int = 0, incarnation: str = "") -> Held | None:
    """How ``worker`` (started as ``incarnation``) holds ``message`` while its process ``pid`` runs it; ``None``
    under at_least_once (redelivered when lost)."""
    if message.deliveries is not None or not worker:
        return None
    return Held(worker, held_member(message, pid, incarnation), ttl)


def held_member(message: StepMessage, pid: int = 0, incarnation: str = "") -> str:
    """The step as its worker holds it: what filing it as lost needs (not its payload nor its context), and
    the process running it (0: not known) in which incarnation of its worker ("": not known)."""
    return json.dumps(
        [message.run, message.node, message.index, message.total, message.key, str(message.strategy)]
        + [message.fail_fast, message.deadline, pid, incarnation]
    )


def held_process(member: str) -> tuple[int, str]:
    """The process a held step names (0 when it names none) and its worker's incarnation ("" when it names
    none: written by an older version)."""
    try:
        found = json.loads(member)
        if not isinstance(found, list):
            return 0, ""
        pid = int(found[8]) if len(found) > 8 else 0
        return pid, str(found[9]) if len(found) > 9 and found[9] else ""
    except (TypeError, ValueError):
        return 0, ""


def held_run(member: str) -> str:
    """The run a held step belongs to ("" when the member is not one this version reads)."""
    try:
        found = json.loads(member)
    except ValueError:
        return ""
    return str(found[0]) if isinstance(found, list) and found else ""


def held_message(member: str) -> StepMessage:
    """The step message a held member stands for: joined by counting, so that filing it as lost can settle
    its block (a chord never hears of a step its worker took down with it).

    Raises:
        DecodeError: not a member this version wrote.
    """
    try:
        run, node, index, total, key, strategy, fail_fast, deadline = json.loads(member)[:8]
        return StepMessage(
            run=run,
            node=node,
            index=int(index),
            total=int(total),
            key=key,
            join=Join.COUNT,
            strategy=ParallelStrategy(strategy),
            step={},
            context={},
            fail_fast=bool(fail_fast),
            deadline=deadline,
        )
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"a held step cannot be read: {exc!r}") from exc


def lost_reason(worker: str) -> str:
    return f"its worker {worker} stopped answering (no heartbeat for {HEARTBEAT_TTL}s): the step was lost with it"


def process_lost_reason(worker: str, pid: int) -> str:
    return f"its worker process {pid} on {worker} ended before the step's outcome was filed: the step was lost with it"


def restarted_reason(worker: str, pid: int) -> str:
    return (
        f"its worker {worker} was restarted while its process {pid} ran the step, before the step's outcome was "
        "filed: the step was lost with it"
    )
