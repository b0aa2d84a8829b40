"""Schedules on beat: the program's schedules as ``beat_schedule`` entries, and the task each entry sends.

An entry sends ``n3.trigger.schedule`` (name, target, source_config, context). The beat process stamps the
message with the moment it fired (the ``n3_fired_at`` header, set as it publishes); the worker that
receives it finds the slot of that moment, claims (schedule, slot) in the coordination store, and only the
one that claims it dispatches the target (a workflow or block of its program, ``NAMEL3SS_CELERY_PROGRAM``)
with a ``schedule`` event as the run's ``trigger_event``.

The stamp is the beat host's clock, not the coordination store's (Redis ``TIME``), on purpose: beat decides
that a slot is due by its own clock (Celery's scheduler, RedBeat and django-celery-beat all do), so the
moment it fires is, by that clock, the start of the slot (plus its tick's lateness), and the same clock
names that slot wherever the host's clock stands. Stamped from Redis's clock instead, a beat whose clock runs
more than ``SKEW`` ahead of Redis's would fire when Redis's clock is still in the slot before, and name that
one: its firing would meet the previous slot's claim and be dropped, or, alone, date every run a slot early.
The worker cannot read the store's clock either: by the time it takes the message, the message may have
waited in the queue for any time. What two beats' clocks must share is only the claim's life: the second
beat's message for a slot must reach a worker while the first's claim lasts (``Schedule.claim_ttl``, three
slots and at least ``CLAIM_MIN`` seconds, a Redis TTL: the store's clock), so their clocks may differ by up
to that, less the time a message waits in the queue. A beat checks its clock against the store's when it
starts and warns beyond ``MAX_CLOCK_SKEW`` (``check_clock``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from celery import signals

from ..compiler.planning import make_plan
from ..engine.ports import CoordinationStore
from ..errors import ConfigurationError, UnknownTarget
from ..routing.queues import adapter_queue
from ..spec import EventTriggerSpec, ProgramSpec
from ..spec.enums import ExecutionMode
from .filters import MISSING, lookup
from .model import Event, EventType
from .schedules import CLAIM_MIN, SCHEDULE_TYPE, parse_schedule, program_schedules
from .targets import background_program, program_for

logger = logging.getLogger("namel3ss_celery")

SCHEDULE_TASK = "n3.trigger.schedule"
FIRED_AT = "n3_fired_at"  # the header beat stamps: when it fired (epoch seconds)
ENTRY_PREFIX = "n3:"  # beat entry names: n3:<schedule name>
CLAIM_SCOPE = "schedule"  # the coordination store's claims of (schedule, slot)
SOURCE = "beat"
MAX_CLOCK_SKEW = CLAIM_MIN / 2  # seconds: two beats each this close to the store's clock meet each other's claims


def entry_name(name: str) -> str:
    """The beat entry of schedule ``name``."""
    return f"{ENTRY_PREFIX}{name}"


def beat_entry(
    name: str, target: str, config: Mapping[str, Any], context: Mapping[str, Any] | None = None, app: Any = None
) -> dict[str, Any]:
    """One ``beat_schedule`` entry: the schedule (checked) and the message it sends.

    Raises:
        SpecError: a bad cron line, time zone or interval, naming the field.
    """
    schedule = parse_schedule(config)
    return {
        "task": SCHEDULE_TASK,
        "schedule": schedule.celery_schedule(app),
        "args": (name, target, schedule.config(), dict(context or {})),
    }


def program_entries(program: ProgramSpec, app: Any = None) -> dict[str, dict[str, Any]]:
    """The program's schedules as ``beat_schedule`` entries, named ``n3:<trigger name>``. An entry whose
    target starts with a block whose every step names a pool goes to that pool's queue, as the launch of
    its run does (a deployment may run pool workers only)."""
    entries = {}
    for index, _schedule in program_schedules(program):
        trigger = program.event_triggers[index]
        entry = beat_entry(trigger.name, trigger.trigger_target, trigger.source_config, app=app)
        spec, workflow = program_for(program, trigger.trigger_target)
        plan = make_plan(spec, workflow)
        queue = adapter_queue([n for n in plan.nodes if not n.depends_on][0].block, plan.pools)
        if queue:
            entry["options"] = {"queue": queue}
        entries[entry_name(trigger.name)] = entry
    return entries


def merge_program_schedules(app: Any, program: ProgramSpec | None) -> int:
    """Add the program's schedules to ``app.conf.beat_schedule`` (the app's own entries stay, and win a
    name they share); how many there are. Beat reads them when its scheduler starts."""
    entries = program_entries(program, app) if program is not None else {}
    if entries:
        app.conf.beat_schedule = {**entries, **dict(app.conf.beat_schedule or {})}
    return len(entries)


def stamp_fired_at(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: a schedule's message carries the moment its beat sent it."""
    if sender == SCHEDULE_TASK and headers is not None and headers.get(FIRED_AT) is None:
        headers[FIRED_AT] = time.time()


def connect_stamp(sender: Any = None, **_: Any) -> None:
    """Stamp schedule messages in this process (once per process; every app shares Celery's signals).
    Connected when beat starts (``beat_init``, before its first tick): other processes publish untouched.
    The beat's clock is checked against the coordination store's then (``check_clock``)."""
    signals.before_task_publish.connect(stamp_fired_at, weak=False, dispatch_uid="namel3ss_celery.fired_at")
    check_clock(sender)


def check_clock(beat: Any) -> float | None:
    """How far this host's clock is ahead of the coordination store's (Redis ``TIME``), in seconds, said in
    the log as a warning beyond ``MAX_CLOCK_SKEW``: two beats by mistake, further apart than a slot's claim
    lasts, could each start a run for one slot (see the module's docstring). ``None`` when ``beat`` (Celery's
    beat service) has no namel3ss-celery app, or the store cannot be read (said in the log too)."""
    n3 = getattr(getattr(beat, "app", None), "namel3ss", None)
    if n3 is None:
        return None
    try:
        skew = time.time() - float(n3.events.store().now())
    except Exception as exc:  # noqa: BLE001 - beat runs its schedules all the same; the store's state is said
        logger.warning("beat could not read the coordination store's clock to compare with its own: %s", exc)
        return None
    if abs(skew) > MAX_CLOCK_SKEW:
        logger.warning(
            "this host's clock is %+.1fs off the coordination store's (Redis TIME): schedule slots are named by "
            "the beat's clock, and a second beat whose clock is more than %gs away from this one could start "
            "a run twice for one slot; synchronise the clocks (NTP), and run one beat per deployment",
            skew,
            CLAIM_MIN,
        )
    return skew


@dataclass
class Firing:
    """What the schedule task needs on a worker: its store, program, dispatch and event stream."""

    store: Callable[[], CoordinationStore]
    program: Callable[[], ProgramSpec | None]
    dispatch: Callable[..., Any]
    announce: Callable[[Event], None]
    counts: dict[str, int] = field(default_factory=dict)  # fired, duplicate

    def fire(
        self, name: str, target: str, config: Mapping[str, Any], context: Mapping[str, Any], fired_at: float
    ) -> str:
        """Schedule ``name``'s firing at ``fired_at``: the run's id, or ``duplicate`` when another beat's
        message for the same slot came first.

        Raises:
            ConfigurationError: this worker has no program.
            UnknownTarget: its program has no workflow or block ``target``.
        """
        schedule = parse_schedule(config, f"schedule {name!r}")
        slot = schedule.slot(fired_at)
        token = uuid.uuid4().hex
        if self.store().stick(CLAIM_SCOPE, f"{name}:{slot}", token, schedule.claim_ttl) != token:
            self._count("duplicate")
            logger.info("schedule %s: slot %s already fired", name, slot)
            return "duplicate"
        program = self.program()
        if program is None:
            raise ConfigurationError(
                f"schedule {name!r} starts {target!r}, a workflow or block of a program, and this worker has "
                "none: set NAMEL3SS_CELERY_PROGRAM",
                setting="NAMEL3SS_CELERY_PROGRAM",
            )
        if target not in {w.name for w in program.workflows} | {b.name for b in program.parallel_blocks}:
            raise UnknownTarget(f"schedule {name!r} starts {target!r}, which is no workflow or block of the program")
        moment = schedule.slot_start(slot)
        data = {
            "trigger": name,
            "target": target,
            "slot": slot,
            "schedule": schedule.config(),
            "scheduled_for": datetime.fromtimestamp(moment, timezone.utc).isoformat(),
            "fired_at": fired_at,
        }
        event = Event.new(EventType.SCHEDULE, SOURCE, data, correlation_id=f"{name}:{slot}")
        self.announce(event)
        found = event.to_dict()
        run_context = {**context, **self._mapped(program, name, found), "trigger_event": found}
        spec, workflow = program_for(program, target)
        trigger = self._trigger(program, name)  # None: a schedule added at runtime
        if trigger is not None and trigger.execution_mode == ExecutionMode.BACKGROUND:
            spec = background_program(spec)
        handle = self.dispatch(spec, run_context, workflow=workflow)
        self._count("fired")
        logger.info("schedule %s: slot %s started run %s", name, slot, handle.id)
        return str(handle.id)

    def _mapped(self, program: ProgramSpec, name: str, event: dict[str, Any]) -> dict[str, Any]:
        """The program trigger's ``context_mapping`` of the schedule event."""
        trigger = self._trigger(program, name)
        if trigger is None:
            return {}
        found = {key: lookup(event, path) for key, path in trigger.context_mapping.items()}
        return {key: value for key, value in found.items() if value is not MISSING}

    def _trigger(self, program: ProgramSpec, name: str) -> EventTriggerSpec | None:
        """The program's schedule ``name`` (``None`` for one added at runtime)."""
        for trigger in program.event_triggers:
            if trigger.name == name and trigger.event_type == SCHEDULE_TYPE:
                return trigger
        return None

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def register_schedule_task(app: Any, firing: Firing) -> None:
    """Register ``n3.trigger.schedule`` on ``app``; a beat process stamps its messages."""
    signals.beat_init.connect(connect_stamp, weak=False, dispatch_uid="namel3ss_celery.beat_stamp")

    @app.task(name=SCHEDULE_TASK, bind=True, shared=False, ignore_result=True)
    def fire_schedule(
        task: Any, name: str, target: str, config: dict[str, Any], context: dict[str, Any] | None = None
    ) -> str:
        fired_at = getattr(task.request, FIRED_AT, None)
        if fired_at is None:  # sent without the stamp (by hand, or by a beat of another version): now
            fired_at = time.time()
        return firing.fire(name, target, config, context or {}, float(fired_at))
