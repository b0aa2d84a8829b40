"""Outcomes filed late: a step that ran while the store was down longer than it waits keeps its outcome.

A step files its outcome patiently (``engine.patience``): for ``store_patience`` seconds it tries again
while the coordination store does not answer. Under default delivery the step's message is already
acknowledged, so giving up then would lose the outcome and leave its block waiting (for its deadline,
or for ever without one). Instead the outcome is handed to this process's late filer: one thread that
files what it holds, oldest first, once the store answers again, then does what follows (settle,
feed, launch). It gives up on an outcome only when its run's record could no longer exist
(``give_up_after``, the run's TTL). Should this process die first, the step is still in its worker's
held steps: once the worker's heartbeat runs out, a watchdog files it as lost (``engine.lost``).
Under ``at_least_once`` the step is not handed over: it fails and its message is delivered again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.filing import FollowUp
from ..engine.ports import Held
from ..engine.runner import StepOutcome
from ..errors import StoreUnavailable, UnknownRun
from ..plan.message import StepMessage

logger = logging.getLogger("namel3ss_celery")

FIRST_DELAY = 0.5
MAX_DELAY = 5.0


@dataclass
class Unfiled:
    """An outcome waiting for the store, and when it was handed over (``time.monotonic()``)."""

    message: StepMessage
    outcome: StepOutcome
    held: Held | None
    keep: bool = False  # an outcome the step's own (filed by another copy of it meanwhile) keeps
    since: float = field(default_factory=time.monotonic)
    filed: bool = False  # filed already: only what follows is left
    follow_up: FollowUp | None = None


class LateFiler:
    """Files outcomes the store refused, from a thread of this process, once it answers.

    Args:
        file: files one outcome and says what follows (``Conductor.file``).
        follow_up: does what follows (``Conductor.follow_up``).
        give_up_after: seconds after which an outcome is dropped (logged as an error): its run is gone.
    """

    def __init__(
        self,
        file: Callable[[StepMessage, StepOutcome, bool, Held | None], FollowUp | None],
        follow_up: Callable[[FollowUp | None], None],
        give_up_after: float,
    ) -> None:
        self._file = file
        self._follow_up = follow_up
        self.give_up_after = give_up_after
        self._pending: deque[Unfiled] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.filed = 0  # outcomes filed late by this process
        self.dropped = 0  # outcomes given up on

    def hand_over(self, message: StepMessage, outcome: StepOutcome, held: Held | None, *, keep: bool = False) -> None:
        """Keep ``outcome`` until the store answers, and file it then; with ``keep`` it does not replace an
        outcome the step filed itself meanwhile (``outcome`` says the step could not start)."""
        logger.error(
            "step %s of run %s: the store did not answer in time; its outcome (%s) will be filed when it does",
            message.key,
            message.run,
            outcome.status,
        )
        with self._lock:
            self._pending.append(Unfiled(message, outcome, held, keep))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="n3-late-filer", daemon=True)
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        delay = FIRST_DELAY
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                item = self._pending[0]
            if self._file_one(item):
                with self._lock:
                    self._pending.popleft()
                delay = FIRST_DELAY
                continue
            self._wake.clear()
            self._wake.wait(delay)
            delay = min(delay * 2, MAX_DELAY)

    def _file_one(self, item: Unfiled) -> bool:
        """True when ``item`` is done with: filed, or dropped; False while the store does not answer."""
        message = item.message
        if time.monotonic() - item.since > self.give_up_after:
            self.dropped += 1
            logger.error("step %s of run %s: its outcome was never filed; the run is gone", message.key, message.run)
            return True
        try:
            if not item.filed:
                item.follow_up = self._file(message, item.outcome, item.keep, item.held)
                item.filed = True
            self._follow_up(item.follow_up)
        except StoreUnavailable:
            return False
        except UnknownRun:
            self.dropped += 1
            logger.warning("step %s of run %s: filed late, but the run's record is gone", message.key, message.run)
            return True
        except Exception:  # noqa: BLE001 - one outcome that cannot be filed must not stop the others
            self.dropped += 1
            logger.exception("step %s of run %s: filing its outcome late failed", message.key, message.run)
            return True
        self.filed += 1
        logger.info("step %s of run %s: its outcome was filed late", message.key, message.run)
        return True
