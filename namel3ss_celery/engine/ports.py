"""The engine's two ports: where a run's state lives (a store) and how its steps get run (a publisher).

The Celery path plugs in the Redis store and a Celery publisher; the local
executor plugs in the memory store and an asyncio publisher. The engine knows
nothing else of either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..plan.message import FedStep
from ..plan.model import Plan, PlanNode


class CoordinationStore(Protocol):
    """Where workers and clients meet. Every key a run creates expires after ``ttl`` seconds.

    No write ever recreates a run whose record is gone (expired, or never made): claims on it are not
    won and ``finish`` returns False; every other write raises ``UnknownRun`` and writes nothing. A store
    that cannot be reached raises ``StoreUnavailable`` (after its own reconnects). The contract is
    tested against both stores in ``tests/integration/test_store_contract.py``.
    """

    def create_run(
        self, run_id: str, fields: Mapping[str, str], ttl: int, leases: Sequence[Lease] = (), first_event: str = ""
    ) -> bool:
        """Write the run's record (and hold ``leases``: the blocks the creator launches itself). A store that
        keeps the deployment's event stream (Redis) appends ``first_event`` (its entry, ``events.stream``) to
        it in the same write, so a run is never recorded without it, and says so (True); the memory store
        leaves it to the caller (False)."""
        ...

    def run_record(self, run_id: str) -> dict[str, str] | None: ...

    def set_fields(self, run_id: str, fields: Mapping[str, str]) -> None:
        """Set some fields of the run.

        Raises:
            UnknownRun: the run's record is gone (expired); nothing was written.
        """
        ...

    def get_fields(self, run_id: str, fields: Sequence[str]) -> list[str | None]:
        """The values of some fields of the run (``None`` where unset)."""
        ...

    def incr(self, run_id: str, field: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer field of the run (0 when unset) and return the new value.

        Raises:
            UnknownRun: the run's record is gone (expired); nothing was written.
        """
        ...

    def set_and_read(self, run_id: str, fields: Mapping[str, str]) -> dict[str, str]:
        """Set some fields and read the whole record back, in one round trip."""
        ...

    def set_unless(self, run_id: str, field: str, value: str, guards: Sequence[str], held: Held | None = None) -> bool:
        """Atomically set ``field`` unless one of the ``guards`` fields is set; True when it was set.

        With ``held``, the step is also added to its worker's held steps (the same atomic write); when not
        set (or the run is gone), removed from them (``take_step`` may have held it before).

        Raises:
            UnknownRun: the run's record is gone (expired); nothing was written.
        """
        ...

    def claim_and_read(
        self, run_id: str, field: str, node: str, lease: Lease | None = None
    ) -> tuple[bool, dict[str, str], dict[int, str]]:
        """``claim`` plus the run record and the block's envelopes, in one round trip."""
        ...

    def claim(self, run_id: str, field: str, value: str = "1", lease: Lease | None = None) -> bool:
        """Set ``field`` on the run only if unset; True for the one caller that set it.

        With ``lease``, the one that set it also holds that lease (the same atomic write).
        """
        ...

    def claim_and_get(self, run_id: str, field: str, read: str, lease: Lease | None = None) -> tuple[bool, str | None]:
        """``claim`` (with its ``lease``) and read another field of the run (``None`` where unset), in one
        round trip."""
        ...

    def record_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int, keep: bool = False) -> int:
        """File one step's envelope under its index; return how many distinct steps are filed.

        With ``keep`` an envelope already filed for that index stays (a duplicate delivery never
        replaces what the step itself reported).
        """
        ...

    def add_step(self, run_id: str, node: str, index: int, envelope: str, ttl: int) -> tuple[int, bool]:
        """``record_step`` with ``keep``: how many distinct steps are filed, and whether this envelope was filed
        (False: the step had filed one already, which stays)."""
        ...

    def file_step(
        self,
        run_id: str,
        node: str,
        index: int,
        envelope: str,
        ttl: int,
        read: str,
        held: Held | None = None,
    ) -> tuple[int, str | None]:
        """``record_step`` and read one run field (the block's decision) in the same round trip; with ``held``,
        the step leaves its worker's held steps."""
        ...

    def step_envelopes(self, run_id: str, node: str) -> dict[int, str]: ...

    def step_counts(self, run_id: str, nodes: Sequence[str]) -> dict[str, int]:
        """How many steps of each block have reported (for progress)."""
        ...

    def finish(self, run_id: str, fields: Mapping[str, str], ttl: int, claim: str | None = None) -> bool:
        """Write the final fields and wake every waiter; True when written.

        With ``claim``, only the first caller to set that field of the run writes anything (one step).
        """
        ...

    def push_items(
        self, run_id: str, name: str, items: Sequence[str], ttl: int, mark: tuple[str, str] | None = None
    ) -> None:
        """Append to a named list of the run (a block's ``max_concurrency`` feed); with ``mark``, set that
        field of the run in the same atomic write (so the items are known to be there)."""
        ...

    def pop_item(self, run_id: str, name: str) -> str | None:
        """Take the first item of a named list of the run, or ``None`` when it is empty."""
        ...

    def wait(self, run_id: str, timeout: float) -> str | None:
        """Block until the run is finished or ``timeout`` passes.

        Returns:
            The run's ``result`` field once it is finished (``""`` if it has none); ``None`` when
            ``timeout`` passed first.
        """
        ...

    def stick(self, scope: str, key: str, owner: str, ttl: int, take_over: bool = False) -> str:
        """The owner of ``key`` in ``scope`` (a sticky pool): ``owner`` when the key had none, or always with
        ``take_over``; each key is forgotten ``ttl`` seconds after it was last used."""
        ...

    def add_deadline(self, run_id: str, node: str, at: float, ttl: int) -> None:
        """Remember that block ``node`` of the run must be decided by ``at`` (epoch seconds), unless a deadline
        is remembered for it already; the index of deadlines lives ``ttl`` seconds after its last addition."""
        ...

    def due_deadlines(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (run, node) pairs whose deadline is at or before ``now``, earliest first."""
        ...

    def drop_deadline(self, run_id: str, node: str) -> None:
        """Forget a block's deadline (it was enforced, or the run is gone)."""
        ...

    def renew_lease(self, run_id: str, node: str, until: float) -> None:
        """The holder of block ``node``'s lease is at work: it holds it until ``until`` (if it still has one)."""
        ...

    def drop_lease(self, run_id: str, node: str) -> None:
        """The launch or settle of block ``node`` is done: nobody needs to finish it."""
        ...

    def expired_leases(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (run, node) pairs whose lease ran out at or before ``now``, earliest first."""
        ...

    def take_lease(self, run_id: str, node: str, now: float, until: float) -> bool:
        """Take over an expired lease (until ``until``); True for the one caller that did."""
        ...

    def beat(self, worker: str, ttl: int, broker: str = "") -> None:
        """``worker`` (of ``broker``: ``apps.broker_identity``) is alive for ``ttl`` more seconds (its watchdog
        says so every second)."""
        ...

    def live_brokers(self) -> set[str]:
        """The brokers of the workers whose heartbeat runs (those that named one)."""
        ...

    def lost_workers(self, limit: int) -> list[str]:
        """Up to ``limit`` workers that hold steps but whose heartbeat ran out."""
        ...

    def take_step(
        self, run_id: str, node: str, index: int, held: Held, guards: Sequence[str], passed: tuple[str, str]
    ) -> bool:
        """Hold step ``index`` of block ``node`` in its worker's name as a pool process takes it, before its
        message is acknowledged (the start guard holds it again, or, refusing it, lets it go); True when
        held. Not held when the run is gone, one of the ``guards`` fields is set (its block was decided or
        settled, the run cancelled), the step is filed, or the field ``passed[0]`` holds the text ``passed[1]``
        (this delivery passed its start guard already): nothing to hold then. Answers at
        once (about a second at most) when the store does not: it runs before an acknowledgement.
        """
        ...

    def held_steps(self, worker: str) -> list[str]:
        """The ``Held.member`` of each step ``worker`` holds."""
        ...

    def release(self, worker: str, member: str) -> None:
        """``member`` is no longer held by ``worker`` (its outcome was filed for it)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Lease:
    """Block ``node`` of a run is being launched or settled by its holder until ``until`` (epoch seconds),
    unless renewed. A lease that runs out means its holder died half way: any worker's watchdog takes it
    over and finishes the work (``engine.leases``)."""

    node: str
    until: float


@dataclass(frozen=True)
class Held:
    """A running step in its worker's held steps: ``member`` (``engine.lost.held_member``), kept ``ttl`` s."""

    worker: str
    member: str
    ttl: int


def _ignore(_value: object) -> None:
    """Progress nobody keeps (a local run, a run ``dispatch`` publishes itself)."""


@dataclass
class Launching:
    """Where publishing a node's first steps starts (``start``), in which chord group, and where to report
    (see ``engine.launching``)."""

    start: int = 0
    group_id: str | None = None
    remember_group: Callable[[str], None] = field(default=_ignore)
    sent: Callable[[int], None] = field(default=_ignore)


class PreparedNode(Protocol):
    """A node its publisher made ready: the feed of its ``max_concurrency`` window and its deadline."""

    feed: list[str]  # encoded ``FedStep`` items, published one by one as steps finish
    deadline: float | None  # the block's absolute deadline (``timeout_seconds``), if any


Prepared = TypeVar("Prepared", bound=PreparedNode)


class Publisher(Protocol[Prepared]):
    """How a run's steps reach whatever runs them; ``Prepared`` is what it makes of a node before sending."""

    def prepare_node(self, run_id: str, plan: Plan, node: PlanNode, context: dict[str, Any]) -> Prepared:
        """Build the node's step messages (nothing is sent yet)."""
        ...

    def send_node(self, run_id: str, plan: Plan, node: PlanNode, prepared: Prepared, launching: Launching) -> None:
        """Send the node's first steps (the feed is in the store by now), from ``launching.start`` on, and report
        progress to ``launching``."""
        ...

    def send_fed(self, item: FedStep) -> None:
        """Send the next step of a ``max_concurrency`` window."""
        ...

    def terminate(self, task_id: str) -> None:
        """Terminate a running step (``terminate_losers``, on pools that can)."""
        ...
