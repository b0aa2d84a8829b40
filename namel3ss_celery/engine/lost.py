"""Steps whose worker stopped answering: each worker's watchdog renews a heartbeat in the store, and every
step it runs (outside at_least_once, where the broker delivers a lost step again) is held in its name until
the step files its outcome. When a worker's heartbeat runs out, any other worker's watchdog files each step
it still held as failed, naming the worker, so their blocks end.
"""

from __future__ import annotations

import json

from ..plan.message import StepMessage
from .ports import Held

HEARTBEAT_TTL = 15  # seconds a worker's heartbeat lasts; its watchdog renews it every second


def held(message: StepMessage, worker: str, ttl: int) -> Held | None:
    """How ``worker`` holds ``message`` while it runs; ``None`` under at_least_once (redelivered when lost)."""
    if message.deliveries is not None or not worker:
        return None
    return Held(worker, held_member(message), ttl)


def held_member(message: StepMessage) -> str:
    """The step as its worker holds it: a step message without its payload and context (enough to file it)."""
    data = message.encode()
    data["step"] = {"target": message.target}
    data["context"] = {}
    return json.dumps(data, sort_keys=True)


def lost_reason(worker: str) -> str:
    return f"its worker {worker} stopped answering (no heartbeat for {HEARTBEAT_TTL}s): the step was lost with it"
