"""What a trigger does with an event that matched it: deduplicate, rate-limit, stop loops, delay, dispatch.

Every window uses the coordination store's clock (Redis TTLs), never this host's: the same event seen by
two workers at once starts one run. An event a trigger drops is counted and reported (a ``system_alert``
in the stream), never lost silently. A delayed trigger's countdown task claims (trigger, event) before it
starts the run, so a broker that delivers it twice (Redis, after its visibility timeout) starts one run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..plan.model import Plan
from ..spec import ProgramSpec
from ..spec.enums import ExecutionMode
from .lifecycle import ONCE
from .matching import MAX_DEPTH, Trigger
from .model import Event, EventType
from .stream import ONCE_TTL, EventStore

logger = logging.getLogger("namel3ss_celery")

FIRE_TASK = "n3.events.fire"
WAITED = "waited"  # an event's metadata: the sync triggers whose runs its emitter waits for (matched on a worker)
DROPPED = frozenset({"delayed", "duplicate", "rate_limited", "loop", "sync_not_waited"})  # fire's answers but run ids
REDELIVERY_AFTER = 3600.0  # kombu's Redis visibility_timeout, where the app sets none


class TriggerFiring:
    """Fires triggers for one ``EventService``.

    Args:
        app: its Celery app (a delayed trigger is a ``FIRE_TASK`` with a countdown).
        store: the event store (claims, counts and the stream).
        publish: ``Namel3ssCelery.publish``.
        target_plan: the checked plan of a program's workflow or block, by name (and whether in the background).
    """

    def __init__(
        self,
        app: Any,
        store: Callable[[], EventStore],
        publish: Callable[..., Any],
        target_plan: Callable[[ProgramSpec, str, bool], Plan],
    ) -> None:
        self.app = app
        self._store = store
        self._publish = publish
        self._target_plan = target_plan
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}  # dispatched, delayed, duplicate, rate_limited, loop, sync_not_waited

    def dedupe_claims(self, triggers: list[Trigger], event: Event) -> dict[str, tuple[str, float]]:
        """The deduplication claim (key, seconds) ``fire`` would make for ``event``, by trigger path: made by
        the caller beforehand (with the event's append: ``EventStore.append_claiming``), its answer given to
        ``fire``."""
        if int(event.metadata.get("depth", 0)) >= MAX_DEPTH or event.metadata.get(ONCE):
            return {}  # refused as a loop, or first_time decides first: fire claims itself
        return {
            t.path: (_dedupe_key(t, event), float(t.spec.deduplicate_window))
            for t in triggers
            if t.spec.deduplicate_window
        }

    def fire(
        self,
        program: ProgramSpec,
        trigger: Trigger,
        event: Event,
        claimed: bool | None = None,
        waits: list[tuple[str, float, Any]] | None = None,
        waited_elsewhere: bool = False,
        delivered_again: bool = False,
    ) -> str:
        """One trigger's answer to one event: deduplicate (``claimed``: its ``dedupe_claims`` claim, made
        already), rate-limit, stop loops, delay, dispatch; a run id, or why none started (``DROPPED``).
        ``waits``: where the emitting process, matching here, collects the runs of ``sync`` triggers to
        wait for (trigger, timeout, handle). ``waited_elsewhere``: matched on a worker, the event's emitter
        waits for this trigger's run. A ``sync`` trigger that nobody waits for starts nothing, and says why.
        ``delivered_again``: the event may be matched again (a match task delivered again after its worker
        was lost): the trigger acts on it once, claimed in the store (``first_time``).
        The claims it made are given back when it cannot act (its start raised): emitted again, the event
        starts the run."""
        depth = int(event.metadata.get("depth", 0))
        if depth >= MAX_DEPTH:
            return self.refuse(
                "loop", trigger, event, f"{depth} triggered runs already lead to this event (MAX_DEPTH {MAX_DEPTH})"
            )
        if trigger.wait_seconds is not None and waits is None and not waited_elsewhere:
            return self.refuse(
                "sync_not_waited",
                trigger,
                event,
                "execution_mode 'sync' waits for the run where the event is emitted, and the process that "
                "emitted this one does not wait: emit it from a process that has the program "
                "(NAMEL3SS_CELERY_PROGRAM), outside a worker",
            )
        taken = self._claims(trigger, event, claimed, delivered_again)
        if taken is None:
            return self.count("duplicate")
        try:
            return self._act(program, trigger, event, depth, waits)
        except BaseException:
            self.release(taken)
            raise

    def _claims(self, trigger: Trigger, event: Event, claimed: bool | None, again: bool) -> list[str] | None:
        """Claim ``event`` for ``trigger``, in one trip: once per event that may come again (see
        ``first_time``), once per dedup window (``claimed``: made by the caller already). The keys claimed,
        or None: a duplicate (only its once claim kept, if any).

        A worker that dies between these claims and its run's record takes that one run with it: the event
        delivered again finds it claimed (the claim cannot tell a dead worker from a slow one)."""
        spec = trigger.spec
        once = self._once_claim(f"fired:{spec.name}", event, again)
        wanted = [once] if once is not None else []
        window = spec.deduplicate_window
        dedupe = _dedupe_key(trigger, event) if window else None
        if dedupe is not None and window and claimed is None:
            wanted.append((dedupe, float(window)))
        won = dict(zip((key for key, _ in wanted), self._store().claim_all(wanted), strict=True)) if wanted else {}
        if dedupe is not None and claimed is not None:
            won[dedupe] = claimed
        taken = [key for key, first in won.items() if first]
        if len(taken) < len(won):  # acted on already, or a duplicate in its window
            # A duplicate in its window keeps its once claim: delivered again, the event is still a duplicate
            # (when its window may have passed).
            self.release([key for key in taken if once is None or key != once[0]])
            return None
        return taken

    def _act(
        self,
        program: ProgramSpec,
        trigger: Trigger,
        event: Event,
        depth: int,
        waits: list[tuple[str, float, Any]] | None,
    ) -> str:
        """What ``fire`` does with an event it claimed: rate-limit, then delay or start the run."""
        spec, store = trigger.spec, self._store()
        for limit, seconds, per in (
            (spec.max_triggers_per_minute, 60, "minute"),
            (spec.max_triggers_per_hour, 3600, "hour"),
        ):
            if limit is not None and store.count(f"rate:{spec.name}:{per}", seconds) > limit:
                return self.refuse("rate_limited", trigger, event, f"more than {limit} per {per}: dropped")
        context = trigger.context(event)
        context["trigger_event"]["metadata"]["depth"] = depth  # the run's own events are one deeper
        if spec.trigger_delay:
            self.app.signature(FIRE_TASK, args=(spec.name, context)).apply_async(
                countdown=spec.trigger_delay, ignore_result=True
            )
            return self.count("delayed")
        if trigger.wait_seconds is None or waits is None:
            return self.start(program, spec.name, context)
        handle = self._dispatch(program, spec.name, context)
        waits.append((spec.name, trigger.wait_seconds, handle))
        return str(handle.id)

    def first_time(self, what: str, event: Event, delivered_again: bool = False) -> bool:
        """False when ``what`` was done for ``event`` already: an event announced again (its metadata says
        ``once``: a resumed settle announcing a run's end), or matched by a task that may be delivered again
        (``delivered_again``; claimed as long as the broker may deliver it again), is acted on once. Any
        other event: True."""
        claim = self._once_claim(what, event, delivered_again)
        return claim is None or self._store().claim(*claim)

    def _once_claim(self, what: str, event: Event, delivered_again: bool) -> tuple[str, float] | None:
        """The claim (key, seconds) that makes ``what`` happen once for ``event`` (see ``first_time``); None
        for an event that comes once."""
        if delivered_again:
            return _once_key(what, event), self._redelivery_window()
        if event.metadata.get(ONCE):
            return _once_key(what, event), float(ONCE_TTL)
        return None

    def start(self, program: ProgramSpec, name: str, context: dict[str, Any]) -> str:
        """Dispatch the target of trigger ``name`` with ``context``; the run's id."""
        return str(self._dispatch(program, name, context).id)

    def start_delayed(self, program: ProgramSpec, name: str, context: dict[str, Any]) -> str:
        """``start``, for a delayed trigger whose countdown ended (``FIRE_TASK``): once per (trigger, event),
        claimed in the store first, so a second delivery of the task starts nothing (``duplicate``). The
        claim is given back when the start fails, so that a later delivery may start it."""
        key = f"delayed:{name}:{context['trigger_event']['event_id']}"
        if not self._store().claim(key, self._redelivery_window()):
            logger.info("trigger %s: the delayed run of event %s started already", name, key.rsplit(":", 1)[-1])
            return self.count("duplicate")
        try:
            return self.start(program, name, context)
        except BaseException:
            try:
                self._store().release([key])
            except Exception:  # noqa: BLE001 - the start's own error is the one raised; this one is said here
                logger.warning("could not give back the claim %s: a later delivery of it starts nothing", key)
            raise

    def release(self, keys: list[str]) -> None:
        """Give back the claims of triggers that an error kept from acting on an event, so that emitting (or
        announcing) it again starts them."""
        if not keys:
            return
        try:
            self._store().release(keys)
        except Exception:  # noqa: BLE001 - the emit's own error is the one raised; this one is said here
            logger.warning(
                "could not give back the dedup claims %s: emitted again in their window, it is a duplicate", keys
            )

    def _redelivery_window(self) -> float:
        """How long a delayed trigger's claim is kept: twice the time after which the broker delivers an
        unacknowledged message again (Redis's ``visibility_timeout``), at least ``ONCE_TTL``."""
        options = self.app.conf.broker_transport_options or {}
        return max(float(ONCE_TTL), 2 * float(options.get("visibility_timeout") or REDELIVERY_AFTER))

    def _dispatch(self, program: ProgramSpec, name: str, context: dict[str, Any]) -> Any:
        """Dispatch the target of trigger ``name`` with ``context`` (a ``background`` trigger's steps on the
        lowest priority); the run's handle."""
        (spec,) = [t for t in program.event_triggers if t.name == name]
        background = spec.execution_mode == ExecutionMode.BACKGROUND
        handle = self._publish(self._target_plan(program, spec.trigger_target, background), context)
        self.count("dispatched")
        logger.info("trigger %s started run %s (event %s)", name, handle.id, context["trigger_event"]["event_id"])
        return handle

    def refuse(self, why: str, trigger: Trigger, event: Event, detail: str) -> str:
        """Count and report an event a trigger dropped: a ``system_alert`` in the stream (never matched)."""
        logger.warning("trigger %s dropped event %s: %s", trigger.spec.name, event.event_id, detail)
        data = {"trigger": trigger.spec.name, "reason": why, "detail": detail, "event_id": event.event_id}
        self.alert(EventType.SYSTEM_ALERT, data, event.correlation_id)
        return self.count(why)

    def alert(self, kind: EventType, data: dict[str, Any], correlation_id: str | None = None) -> None:
        """Put an event of the adapter's in the stream that starts nothing (it is at the depth limit)."""
        alert = Event.new(kind, "namel3ss-celery", data, correlation_id=correlation_id, metadata={"depth": MAX_DEPTH})
        self._store().append(alert)

    def count(self, what: str) -> str:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1
        return what


def dropped(outcome: str) -> bool:
    """Whether ``outcome`` (what ``fire`` answered) says why no run started, rather than naming a run."""
    return outcome in DROPPED


def _once_key(what: str, event: Event) -> str:
    return f"{what}:{event.event_id}"


def _dedupe_key(trigger: Trigger, event: Event) -> str:
    return f"dedupe:{trigger.spec.name}:{trigger.dedupe_value(event.to_dict())}"
