"""The chaos thread: at seeded random times, kill a worker, restart Redis, or deliver a step message twice.

Each kind of fault has its own mean interval; the gaps are exponential, drawn
from a ``random.Random`` per kind seeded with the soak's seed, so the schedule
(not what it hits, which depends on timing) repeats for a seed; the choices
(which worker, which message, how long Redis stays down) come from another.

- ``kill``: SIGKILL a random worker and its pool children, start a replacement
  (``Cluster.kill_random``);
- ``restart``: SIGTERM the private Redis (it fsyncs its AOF and exits), keep it
  down 0.5 to 3 s, start it again on the same port and directory (the AOF
  restores every key) and wait until it answers PING;
- ``duplicate``: publish a copy of a step message (an ``n3.step.*`` task) the
  broker already has or had. The copy is taken, without consuming anything,
  from one of: the messages now waiting in the queue's lists (``LRANGE``),
  the messages delivered to a worker and not yet acknowledged (kombu's
  ``unacked`` hash: a step that is running), or messages seen waiting
  earlier (most have run by now). It is the same JSON with a new kombu
  ``delivery_tag`` (same Celery task id, same body), ``LPUSH``ed onto the
  queue's list, as a broker redelivery would look to a worker.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis

from bench.soak_cluster import Cluster

TICK = 0.2  # seconds between looks at the queue (and checks of the schedule)
SEEN = 300  # step messages kept from earlier looks
PRIORITY_SEP = "\x06\x16"  # kombu's Redis priority lists: <queue>\x06\x16<n>
UNACKED = "unacked"


@dataclass(frozen=True)
class StepRef:
    """The step a message runs: its run id, and ``<token>:<attempt>`` as the step's probes name it."""

    run: str
    probe: str


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, when it began (epoch seconds), what it hit, and for a duplicate its step."""

    kind: str
    at: float
    detail: str
    step: StepRef | None = None
    source: str | None = None  # a duplicate's: "queued", "running" or "earlier"

    @property
    def run(self) -> str | None:
        return self.step.run if self.step is not None else None


@dataclass(frozen=True)
class Candidate:
    """A step message that could be delivered again, and where it was found."""

    raw: str
    source: str  # "queued", "running" or "earlier"


class Chaos(threading.Thread):
    """Inject faults until ``stop()``; ``faults`` lists what was done, ``error`` what broke the thread.

    Args:
        cluster: the private Redis and the workers.
        queue: the queue the steps go to.
        seed: seeds the schedule and the choices.
        every: the mean seconds between faults of each kind (``kill``, ``restart``, ``duplicate``).
    """

    def __init__(self, cluster: Cluster, queue: str, seed: int, every: dict[str, float]) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.cluster = cluster
        self.queue = queue
        self.rng = random.Random(f"chaos-{seed}")  # choices
        self.every = every
        self._schedules = {kind: random.Random(f"chaos-{seed}-{kind}") for kind in every}
        self.faults: list[Fault] = []
        self.missed: dict[str, int] = {}  # faults that found nothing to do, or failed, by reason
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._seen: deque[str] = deque(maxlen=SEEN)
        now = time.monotonic()
        self._next = {kind: now + self._gap(kind) for kind, mean in every.items() if mean > 0}

    def stop(self) -> None:
        """Ask the thread to stop after the fault in progress; ``join()`` waits for it."""
        self._stopping.set()

    def run(self) -> None:
        client = self.cluster.redis.client()
        try:
            while not self._stopping.wait(TICK):
                queued = self._look(client)
                for kind, due in sorted(self._next.items(), key=lambda item: item[1]):
                    if time.monotonic() >= due and not self._stopping.is_set():
                        self._fire(kind, client, queued)
                        self._next[kind] = due + self._gap(kind)  # seeded times, however long a fault took
        except BaseException as exc:  # noqa: BLE001 - reported by the soak, which goes on measuring
            self.error = exc
        finally:
            client.close()

    def _gap(self, kind: str) -> float:
        return self._schedules[kind].expovariate(1.0 / self.every[kind])

    def _miss(self, reason: str) -> None:
        self.missed[reason] = self.missed.get(reason, 0) + 1

    def _fire(self, kind: str, client: redis.Redis[str], queued: list[str]) -> None:
        if kind == "kill":
            self._kill()
        elif kind == "restart":
            self._restart()
        else:
            self._duplicate(client, queued)

    def _kill(self) -> None:
        at = time.time()
        victim = self.cluster.kill_random(self.rng)
        if victim is None:
            self._miss("kill: no worker alive")
            return
        self.faults.append(Fault("kill", at, f"{victim} killed, soak{self.cluster.started} started"))

    def _restart(self) -> None:
        down = round(self.rng.uniform(0.5, 3.0), 2)
        at = time.time()
        self.cluster.redis.restart(down)
        self.faults.append(Fault("restart", at, f"down {down}s, back after {time.time() - at:.2f}s"))

    # --- duplicate deliveries ------------------------------------------------------

    def _lists(self) -> list[str]:
        return [self.queue, *(f"{self.queue}{PRIORITY_SEP}{n}" for n in range(1, 10))]

    def _look(self, client: redis.Redis[str]) -> list[str]:
        """The step messages waiting now (at most 20 per list); remembered for later duplicates."""
        try:
            with client.pipeline(transaction=False) as pipe:
                for name in self._lists():
                    pipe.lrange(name, 0, 19)
                found = [raw for batch in pipe.execute() for raw in batch if step_ref(raw) is not None]
        except redis.RedisError:
            return []  # Redis is restarting: nothing to look at
        self._seen.extend(found)
        return found

    def _running(self, client: redis.Redis[str]) -> list[str]:
        """Step messages delivered to a worker and not acknowledged yet (up to 10 of kombu's ``unacked``)."""
        entries = client.hrandfield(UNACKED, 10, withvalues=True) or []
        messages = [json.dumps(json.loads(value)[0]) for value in entries[1::2]]  # [message, exchange, key]
        return [raw for raw in messages if step_ref(raw) is not None]

    def _duplicate(self, client: redis.Redis[str], queued: list[str]) -> None:
        try:
            waiting = set(queued)
            sources = {
                "queued": queued,
                "running": self._running(client),
                "earlier": [raw for raw in self._seen if raw not in waiting],
            }
            available = [source for source, found in sources.items() if found]
            if not available:
                self._miss("duplicate: no step message to copy")
                return
            source = self.rng.choice(available)
            chosen = Candidate(self.rng.choice(sources[source]), source)
            at = time.time()
            client.lpush(self.queue, redelivered(chosen.raw))
        except (redis.RedisError, ValueError) as exc:  # Redis restarting, or a message not in kombu's form
            self._miss(f"duplicate: {type(exc).__name__}")
            return
        task = json.loads(chosen.raw)["headers"]["task"]
        self.faults.append(Fault("duplicate", at, task, step_ref(chosen.raw), chosen.source))


def step_ref(raw: str) -> StepRef | None:
    """The step of an ``n3.step.*`` message in kombu's Redis JSON form; ``None`` for any other message."""
    try:
        message = json.loads(raw)
        headers = message["headers"]
        if not str(headers["task"]).startswith("n3.step."):
            return None
        body = json.loads(base64.b64decode(message["body"]))[0][0]  # [args, kwargs, embed]; args[0]: the step message
        return StepRef(str(body["run"]), f"{body['step']['token']}:{int(headers.get('retries') or 0)}")
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def redelivered(raw: str) -> str:
    """The same message with a new kombu delivery tag: a second delivery of the same Celery task."""
    message: dict[str, Any] = json.loads(raw)
    message["properties"] = {**message["properties"], "delivery_tag": str(uuid.uuid4())}
    return json.dumps(message)
