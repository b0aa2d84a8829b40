"""What travels to a worker: the step message a step task receives, and a feed item holding one.

Both are frozen dataclasses with one ``encode`` and one ``decode``; no other
module reads their keys. The wire form of a step message is a JSON object of
schema version ``SCHEMA_VERSION``; a worker refuses any other version. What a
step files back is the ``Envelope`` (``plan.envelope``, also importable here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DecodeError
from ..spec import ParallelStrategy
from .decoding import read_count, read_mapping, read_seconds, read_text, read_version
from .envelope import Envelope
from .kinds import Join

__all__ = [
    "CONTEXT_INLINE_LIMIT",
    "KNOWN_VERSIONS",
    "ROUTING_KEYS",
    "SCHEMA_VERSION",
    "STORED_CONTEXT_VERSION",
    "Envelope",
    "FedStep",
    "StepMessage",
    "Sticky",
    "StoredContext",
]

SCHEMA_VERSION = 1
STORED_CONTEXT_VERSION = 2  # a message whose context is stored once per node (``context_ref``)
KNOWN_VERSIONS = (SCHEMA_VERSION, STORED_CONTEXT_VERSION)
CONTEXT_INLINE_LIMIT = 32 * 1024  # bytes of JSON a context may have and still travel in every step message


class StoredContext(dict):  # type: ignore[type-arg]
    """An empty context that stands for one stored once in the run's record (``fields.node_context``): the
    steps of a node whose context is large carry only its ``ref``."""

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref


# The keys every step message has; a mapping without them is not one of ours.
ROUTING_KEYS = frozenset({"run", "node", "i", "n", "key", "join"})


@dataclass(frozen=True)
class Sticky:
    """distribution_policy sticky: the pool and the key whose first worker keeps it."""

    pool: str
    key: str


@dataclass(frozen=True)
class StepMessage:
    """The body of one ``n3.step.<target>`` message.

    Besides the step and its context it carries what a worker needs to settle
    without reading the plan: the block's strategy, ``fail_fast``, how many
    retries a failure gets (and their delays, from its task queue), whether a
    finished step publishes the next one (``feed``, under ``max_concurrency``),
    the block's absolute ``deadline``, and its pool's policies.
    """

    run: str
    node: str
    index: int
    total: int  # steps in the block
    key: str  # the step's name in results (its ``name``, or ``step_<index>``)
    join: Join
    strategy: ParallelStrategy
    step: dict[str, Any]  # the step's own keys: target, kind, payload...
    context: dict[str, Any]
    fail_fast: bool = False
    retries: int = 0
    feed: bool = False
    deadline: float | None = None
    countdowns: tuple[float, ...] | None = None  # its task queue's retry delays; None: the block's backoff
    dlq: str | None = None  # its dead-letter queue
    sticky: Sticky | None = None
    retry_local: bool = False
    max_wait: float | None = None  # seconds it may wait in its queue
    max_wait_field: str = "max_wait_seconds"  # which field set max_wait (or "message_retention")
    deliveries: int | None = None  # at_least_once: how many deliveries one attempt may take
    requeued_from: str | None = None  # the task id it was requeued from, out of a dead-letter queue
    requeues: int = 0
    context_ref: str | None = None  # the node whose context is stored in the run's record (not in the message)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # keys of a newer minor writer

    @property
    def target(self) -> str:
        return str(self.step.get("target"))

    @property
    def kind(self) -> str:
        return str(self.step.get("kind", "tool"))

    @property
    def timeout_seconds(self) -> float | None:
        limit = self.step.get("timeout_seconds")
        return float(limit) if limit else None

    def expires(self, queued_at: float) -> float | None:
        """When this message, queued at ``queued_at``, expires: at its block's deadline, or sooner by the wait
        it allows (``max_wait``: its pool's ``max_wait_seconds`` or its task queue's ``message_retention``)."""
        if self.max_wait is None:
            return self.deadline
        limit = queued_at + self.max_wait
        return min(self.deadline, limit) if self.deadline is not None else limit

    def requeued(self, task_id: str) -> StepMessage:
        """This message as a dead-letter queue requeues it: outside its block, one requeue more."""
        return replace(self, requeued_from=task_id, requeues=self.requeues + 1)

    def encode(self) -> dict[str, Any]:
        """The message's JSON object (what the step task receives as its one argument)."""
        data: dict[str, Any] = {
            "v": STORED_CONTEXT_VERSION if self.context_ref else SCHEMA_VERSION,
            "run": self.run,
            "node": self.node,
            "i": self.index,
            "n": self.total,
            "key": self.key,
            "join": str(self.join),
            "strategy": str(self.strategy),
            "fail_fast": self.fail_fast,
            "retries": self.retries,
            "feed": self.feed,
            "deadline": self.deadline,
            "step": self.step,
            "context": self.context,
        }
        if self.countdowns is not None:
            data["countdowns"] = list(self.countdowns)
        if self.dlq:
            data["dlq"] = self.dlq
        if self.sticky is not None:
            data["sticky"] = {"pool": self.sticky.pool, "key": self.sticky.key}
        if self.retry_local:
            data["retry_local"] = True
        if self.max_wait is not None:
            data["max_wait"] = self.max_wait
            data["max_wait_field"] = self.max_wait_field
        if self.deliveries is not None:
            data["deliveries"] = self.deliveries
        if self.requeued_from:
            data["requeued_from"] = self.requeued_from
            data["requeues"] = self.requeues
        if self.context_ref:
            data["context_ref"] = self.context_ref
        return data

    @classmethod
    def decode(cls, data: Any) -> StepMessage:
        """Read a step message.

        Raises:
            SchemaVersionError: not a mapping, or written with a schema version this worker does not know.
            DecodeError: a field is missing or of the wrong type (named in the message).
        """
        version = read_version(data, KNOWN_VERSIONS)
        try:
            sticky = data.get("sticky")
            countdowns = data.get("countdowns")
            message = cls(
                run=read_text(data, "run"),
                node=read_text(data, "node"),
                index=read_count(data, "i"),
                total=read_count(data, "n"),
                key=read_text(data, "key"),
                join=Join(data["join"]),
                strategy=ParallelStrategy(data.get("strategy", "all")),
                step=read_mapping(data, "step"),
                context=read_mapping(data, "context") if data.get("context") is not None else {},
                fail_fast=bool(data.get("fail_fast")),
                retries=int(data.get("retries", 0)),
                feed=bool(data.get("feed")),
                deadline=read_seconds(data, "deadline"),
                countdowns=tuple(float(c) for c in countdowns) if countdowns is not None else None,
                dlq=data.get("dlq") or None,
                sticky=Sticky(str(sticky["pool"]), str(sticky["key"])) if sticky else None,
                retry_local=bool(data.get("retry_local")),
                max_wait=read_seconds(data, "max_wait"),
                max_wait_field=str(data.get("max_wait_field", "max_wait_seconds")),
                deliveries=int(data["deliveries"]) if data.get("deliveries") is not None else None,
                requeued_from=data.get("requeued_from") or None,
                requeues=int(data.get("requeues", 0)),
                context_ref=data.get("context_ref") or None,
            )
        except KeyError as exc:
            raise DecodeError(f"step message has no {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"step message field of the wrong type: {exc}") from exc
        if (version == STORED_CONTEXT_VERSION) != (message.context_ref is not None):
            raise DecodeError(
                f"a step message of schema version {version} must carry a context_ref only with version 2"
            )
        if message.index >= message.total:
            raise DecodeError(f"step message index {message.index} is not below its block's {message.total} steps")
        return message

    @classmethod
    def routing(cls, data: Any) -> StepMessage | None:
        """The message, when ``data`` is one of ours that still names its run and block; ``None`` otherwise
        (for the hooks that file an outcome for a step that ended without filing one)."""
        if not isinstance(data, Mapping) or not set(data) >= ROUTING_KEYS:
            return None
        try:
            return cls.decode(data)
        except DecodeError:
            return None


@dataclass(frozen=True)
class FedStep:
    """A step of a ``max_concurrency`` window waiting in its block's feed list for a slot."""

    target: str
    message: StepMessage
    queue: str | None = None  # its pool's queue; None: the app's own routes

    def encode(self) -> str:
        return json.dumps({"task": self.target, "payload": self.message.encode(), "queue": self.queue})

    @classmethod
    def decode(cls, text: str) -> FedStep:
        """Read a feed item.

        Raises:
            DecodeError: not a feed item this version wrote.
        """
        try:
            data = json.loads(text)
            return cls(str(data["task"]), StepMessage.decode(data["payload"]), data.get("queue") or None)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"a feed item cannot be read: {exc!r}") from exc
