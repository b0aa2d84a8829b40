"""Every key and field name a run has in the coordination store, in one place.

A run is one hash (``run_key``) holding its record and control fields, one hash
of step envelopes per block (``steps_key``), named lists (``list_key``: a
block's ``max_concurrency`` feed) and a one-item list that wakes waiters
(``done_key``). Field names are built here and nowhere else.
"""

from __future__ import annotations

# --- keys ----------------------------------------------------------------------


def run_key(run_id: str) -> str:
    return f"n3:run:{run_id}"


def steps_key(run_id: str, node: str) -> str:
    return f"n3:run:{run_id}:steps:{node}"


def list_key(run_id: str, name: str) -> str:
    return f"n3:run:{run_id}:list:{name}"


def done_key(run_id: str) -> str:
    return f"n3:run:{run_id}:done"


DEADLINES_KEY = "n3:deadlines"  # every pending block deadline: run and node, scored by when
# Every launch or settle in progress (run and node), scored by when its process is taken for dead (its lease).
LEASES_KEY = "n3:leases"


def node_member(run_id: str, node: str) -> str:
    """A block of a run as a member of the deadlines or the leases."""
    return f"{run_id}\n{node}"


def worker_key(worker: str) -> str:
    """A worker's heartbeat: it exists while the worker's watchdog renews it."""
    return f"n3:worker:{worker}"


def held_key(worker: str) -> str:
    """The steps a worker is running (a set of ``held`` members), filed for it should it stop answering."""
    return f"n3:worker:{worker}:steps"


STREAM_KEY = "n3:events"  # the deployment's event stream (events.stream), where a run's first event is written with it
STREAM_FIELD = "event"  # the field of each stream entry that holds the event (events.stream.stream_entry)
MAX_EVENTS = 100_000  # kept in the stream (approximately: Redis trims whole nodes)
STREAM_TTL = 7 * 86_400  # seconds the stream outlives its newest event

WORKERS_KEY = "n3:workers"  # every worker that has beaten lately: where lost workers are looked for


def sticky_key(scope: str, key: str) -> str:
    return f"n3:sticky:{scope}:{key}"


# --- fields of the run's record ----------------------------------------------------

KIND = "kind"  # "block" | "workflow" | "program"
NAME = "name"
PLAN = "plan"  # the plan's JSON
CONTEXT = "context"  # the run's initial context, JSON
STATUS = "status"  # a RunStatus
CREATED = "created"  # when it was dispatched (epoch seconds, repr of a float)
RESULT = "result"  # the final result's JSON, once it ended
DONE = "done"  # "1" once it ended
FINAL = "final"  # claimed by the one caller that ends the run
CANCELLED = "cancelled"  # "1" once cancel() was called
QUEUES = "queues"  # JSON: where each node's steps, and the launch, were sent (routing.consumers.node_queues)
BROKER = "broker"  # the broker the run was dispatched through (apps.broker_identity): whose watchdogs finish it


def launched(node: str) -> str:
    """Claimed by the one caller that launches ``node``."""
    return f"node:{node}:launched"


def settled(node: str) -> str:
    """Claimed by the one caller that settles ``node``."""
    return f"node:{node}:settled"


def decided(node: str) -> str:
    """The block's ``Decision`` (JSON), claimed by whatever decided it first."""
    return f"node:{node}:decided"


def node_result(node: str) -> str:
    """The block's ``ParallelExecutionResult`` (JSON), once settled."""
    return f"node:{node}:result"


def expanded_block(node: str) -> str:
    """The block as launched, with the steps its fan-out made (JSON)."""
    return f"node:{node}:block"


def node_context(node: str) -> str:
    """A node's context (JSON), stored once when it is too large to travel in every step message."""
    return f"node:{node}:context"


def started_prefix(node: str) -> str:
    return f"node:{node}:started:"


def started(node: str, index: int) -> str:
    """Set by the start guard when step ``index`` began: where it runs (JSON)."""
    return f"{started_prefix(node)}{index}"


def deliveries(node: str, index: int, retries: int) -> str:
    """How many times one attempt of a step was delivered (at_least_once's bound)."""
    return f"node:{node}:deliveries:{index}:{retries}"


def published(node: str) -> str:
    """How many of a node's first step messages the broker has surely received (a launch in progress)."""
    return f"node:{node}:published"


def chord_group(node: str) -> str:
    """The Celery group id of a node published as a chord (a resumed launch sends the rest in it)."""
    return f"node:{node}:group"


def feed(node: str) -> str:
    """The name of a block's ``max_concurrency`` feed list (``list_key``)."""
    return f"feed:{node}"


STEP_VALUE = "__n3_step__"  # a step payload key: the step value itself, handed to the function as it is (Namel3ss API)
