"""What any worker (or beat) enforces on a timer, whatever became of the processes that ran a block: deadlines
that passed, the steps of workers whose heartbeat ran out, and launches and settles whose process died half
way. Each works through the conductor's methods it is given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import DecodeError
from ..plan.kinds import Outcome
from ..plan.message import StepMessage
from ..tracing import event
from .decide import TIMED_OUT, Decision
from .home import Takes, everywhere
from .leases import SETTLE_LEASE
from .lost import held_message, held_process, held_run, lost_reason, process_lost_reason, restarted_reason
from .ports import CoordinationStore

FileLost = Callable[[StepMessage, str, str, "Outcome | None"], None]  # the conductor's file_lost_message
DecideAndSettle = Callable[[str, str, Decision], None]  # the conductor's decide_and_settle
Resume = Callable[[str, str], None]  # the conductor's resume

logger = logging.getLogger("namel3ss_celery")


def enforce_lost_workers(
    store: CoordinationStore, file_lost: FileLost, limit: int = 20, takes: Takes = everywhere
) -> int:
    """File every step held by a worker whose heartbeat ran out as failed (``engine.lost``), so its block
    ends; a step that filed its own outcome meanwhile keeps it. A step of a run this process ``takes`` not
    (yet: ``engine.home``) stays held. Returns how many workers were lost."""
    workers = store.lost_workers(limit)
    for worker in workers:
        for member in store.held_steps(worker):
            if not takes(held_run(member), member):
                continue
            logger.warning("worker %s stopped answering: filing its step %s as lost", worker, member[:200])
            _file_held(store, file_lost, worker, member, lost_reason(worker))
    return len(workers)


def _file_held(store: CoordinationStore, file_lost: FileLost, worker: str, member: str, reason: str) -> None:
    """File a held step as lost and release it; one this version cannot read is logged and released, one
    whose filing fails is logged and stays held for a later look (the others of its worker are still
    filed either way)."""
    try:
        message = held_message(member)
    except DecodeError as exc:
        logger.error("worker %s held a step this version cannot read, dropped: %s (%s)", worker, member[:200], exc)
    else:
        try:
            file_lost(message, "", reason, None)
        except Exception:  # noqa: BLE001 - it stays held, so a later look files it; the others go on meanwhile
            logger.exception("filing step %s of run %s as lost failed", message.key, message.run)
            return
    store.release(worker, member)


def enforce_ended_processes(
    store: CoordinationStore, file_lost: FileLost, worker: str, alive: Callable[[int], bool], incarnation: str = ""
) -> int:
    """File every step ``worker`` holds in the name of a process that has ended (``alive`` says no), or of an
    earlier incarnation of ``worker`` (restarted since under the same name), as failed, so its block ends:
    ``worker``'s own watchdog calls this, on its host. A step that filed its own outcome meanwhile keeps it.
    Returns how many were filed."""
    filed = 0
    for member in store.held_steps(worker):
        pid, held_by = held_process(member)
        if incarnation and held_by and held_by != incarnation:
            reason = restarted_reason(worker, pid)
        elif pid and not alive(pid):
            reason = process_lost_reason(worker, pid)
        else:
            continue
        logger.warning("worker %s: filing its step %s as lost: %s", worker, member[:200], reason)
        _file_held(store, file_lost, worker, member, reason)
        filed += 1
    return filed


def enforce_deadlines(
    store: CoordinationStore,
    decide_and_settle: DecideAndSettle,
    now: float | None = None,
    limit: int = 100,
    takes: Takes = everywhere,
) -> int:
    """Decide every block whose deadline has passed as ``timeout`` and settle it (``n3.settle.deadline``
    and the watchdog of every worker call this): a deadline fires whatever became of the processes that
    launched or run its block; one of a run this process ``takes`` not (yet) waits. Returns how many
    deadlines were due.

    Idempotent: a block settles once (claimed), under whichever decision came first.
    """
    now = time.time() if now is None else now
    due, looked = _taken(lambda n: store.due_deadlines(now, n), limit, takes)
    for run_id, node in due:
        try:
            event("deadline", run_id=run_id, node=node)
            decide_and_settle(run_id, node, TIMED_OUT)
        except Exception:  # noqa: BLE001 - the next look tries it again; the others go on meanwhile
            logger.exception("enforcing the deadline of block %s of run %s failed", node, run_id)
            continue
        store.drop_deadline(run_id, node)
    return looked


def enforce_leases(
    store: CoordinationStore, resume: Resume, now: float | None = None, limit: int = 20, takes: Takes = everywhere
) -> int:
    """Finish every launch or settle whose lease ran out: its process died half way (``leases``). Each is
    taken over by one caller (the watchdog of every worker calls this), which holds it while it works; one
    of a run this process ``takes`` not (yet) is left. Returns how many had run out."""
    now = time.time() if now is None else now
    expired, looked = _taken(lambda n: store.expired_leases(now, n), limit, takes)
    for run_id, node in expired:
        if not store.take_lease(run_id, node, now, now + SETTLE_LEASE):
            continue  # another process took it, or its holder renewed it meanwhile
        try:
            resume(run_id, node)
        except Exception:  # noqa: BLE001 - its lease runs out again and a later look tries again
            logger.exception("finishing the launch or settle of block %s of run %s failed", node, run_id)
    return looked


def _taken(
    listed: Callable[[int], list[tuple[str, str]]], limit: int, takes: Takes
) -> tuple[list[tuple[str, str]], int]:
    """Up to ``limit`` of the overdue (run, node) that ``listed(n)`` gives (the first ``n``, oldest first) which
    this process ``takes`` now, looking past those it leaves (another broker's, ``engine.home``) to ten times
    ``limit``; and how many it looked at. ``takes`` is asked once per item."""
    asked, decided = limit, {}
    while True:
        items = listed(asked)
        for item in items:
            if item not in decided:
                decided[item] = takes(*item)
        mine = [item for item in items if decided[item]]
        if len(mine) >= limit or len(items) < asked or asked >= 10 * limit:
            return mine[:limit], len(items)
        asked += limit
