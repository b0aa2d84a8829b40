"""A trigger's ``execution_mode``: who waits for the run it starts.

- ``async`` (the default): the run is dispatched and the matching goes on; nobody waits for it.
- ``background``: dispatched as ``async``, and nobody waits for it either, but its steps that set no
  ``priority`` of their own go on the lowest (0), behind the deployment's other work
  (``targets.background_program``).
- ``sync``: the process that emitted the event waits for the run to end before ``emit`` returns, at most
  ``source_config.sync_timeout_seconds`` (default ``DEFAULT_SYNC_TIMEOUT``), then raises ``WaitTimeout``
  (the run goes on); the run's ``RunResult`` is then in the returned event's ``results``, by trigger. The
  emitter must have the program (``NAMEL3SS_CELERY_PROGRAM``) to know that it waits: the worker that
  matches the event starts the run and answers with its id. Waiting inside a worker can deadlock (the run
  may need the very worker slot that waits, as Celery's "never call result.get() within a task" says), so
  ``sync`` is refused there: when the program loads for what is only matched on workers (schedules, the
  adapter's own events, a ``trigger_delay``), and at ``emit`` from a step or a Celery task. An event whose
  emitter does not wait (it has no program) starts nothing for a ``sync`` trigger, and a ``system_alert``
  says why.
"""

from __future__ import annotations

import math

from ..errors import SpecError
from ..spec import EventTriggerSpec
from ..spec.enums import ExecutionMode
from ..spec.limits import MAX_DURATION_SECONDS
from .model import EMITTABLE, EventType

SYNC_TIMEOUT = "sync_timeout_seconds"  # source_config: how long a sync trigger's emitter waits for the run
DEFAULT_SYNC_TIMEOUT = 300.0  # as long as RunHandle.get waits by default


def sync_timeout(spec: EventTriggerSpec, kind: EventType | str, path: str) -> float | None:
    """The seconds a ``sync`` trigger's emitter waits for its run (``None``: the trigger is not ``sync``).

    Raises:
        SpecError: naming ``<path>.execution_mode``: ``sync`` on a trigger that is only matched on workers
            (a schedule, an event the adapter announces, a ``trigger_delay``); or
            ``<path>.source_config.sync_timeout_seconds``: not a number of seconds, or given without ``sync``.
    """
    value = spec.source_config.get(SYNC_TIMEOUT)
    if spec.execution_mode != ExecutionMode.SYNC:
        if value is not None:
            raise SpecError(
                f"{SYNC_TIMEOUT} is how long a 'sync' trigger's emitter waits; this trigger is {spec.execution_mode}",
                path=f"{path}.source_config.{SYNC_TIMEOUT}",
            )
        return None
    where = f"{path}.execution_mode"
    if kind not in EMITTABLE:
        raise SpecError(
            f"execution_mode 'sync' makes the process that emits the event wait for the run; {kind} events "
            "are matched inside workers, where waiting can deadlock: use 'async' or 'background'",
            path=where,
        )
    if spec.trigger_delay:
        raise SpecError(
            "execution_mode 'sync' waits where the event is emitted, and a trigger_delay starts the run later "
            "on a worker: give one or the other",
            path=where,
        )
    if value is None:
        return float(DEFAULT_SYNC_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"a number of seconds, not {value!r}", path=f"{path}.source_config.{SYNC_TIMEOUT}")
    if not 0 < value <= MAX_DURATION_SECONDS:
        raise SpecError(
            f"more than 0 and at most {MAX_DURATION_SECONDS:g} seconds, not {value!r}",
            path=f"{path}.source_config.{SYNC_TIMEOUT}",
        )
    return float(value)
