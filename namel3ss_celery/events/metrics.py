"""Prometheus metrics of a deployment's runs, served at ``/metrics`` by ``namel3ss-celery events --serve``.

Built from the event stream, followed from the server's start (each run's ``workflow_started`` and its one
``workflow_completed``, which carries a summary of its blocks), and, at each scrape, the depth of each
queue of the program's worker pools and of its dead-letter queues. Series (all prefixed ``namel3ss_``):

- ``runs_started_total{workflow}``, ``runs_finished_total{workflow,status}``
- ``steps_total{target,status}``: the steps of finished runs
- ``step_retries_total{workflow,block,target}``: retries of the steps of finished runs (each try after a
  step's first)
- ``dead_letters_total{workflow,block,target,queue}``: steps of finished runs whose message went to a
  dead-letter queue
- ``block_duration_seconds{strategy}``: a histogram of finished blocks
- ``loser_worker_seconds_total{strategy}``: how long race and any_success losers ran; losers still stopping
  when their run ended are counted once they all reported (read from the block's result in the run's record,
  when the follower has the coordination store)
- ``queue_messages{queue,kind}``: messages waiting in a pool's queue (``kind="pool"``) or in a
  dead-letter queue (``kind="dead_letters"``)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..engine.ports import CoordinationStore
from ..plan import fields
from .model import Event, EventType
from .stream import EventStore

logger = logging.getLogger("namel3ss_celery")

POLL = 1.0  # seconds a read of the stream waits before the follower looks at stop() again
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RACING = ("race", "any_success")
LOSERS_EVERY = 5.0  # seconds between looks at the blocks whose losers were still stopping when their run ended

QueueDepths = Callable[[], Iterable[tuple[str, str, int]]]  # (queue, kind, messages)


class _Queues(Collector):
    def __init__(self, depths: QueueDepths) -> None:
        self.depths = depths

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "namel3ss_queue_messages",
            "Messages waiting in a worker pool's queue or a dead-letter queue",
            labels=["queue", "kind"],
        )
        try:
            for queue, kind, count in self.depths():
                family.add_metric([queue, kind], count)
        except Exception:  # noqa: BLE001 - a scrape shows the other series when the broker does not answer
            logger.exception("reading queue depths for /metrics failed")
        yield family


class RunMetrics:
    """The series, fed from the stream by ``follow`` (a thread), rendered by ``render``."""

    def __init__(self, depths: QueueDepths | None = None) -> None:
        self.registry = CollectorRegistry()
        self.runs_started = Counter("namel3ss_runs_started", "Runs dispatched", ["workflow"], registry=self.registry)
        self.runs_finished = Counter(
            "namel3ss_runs_finished", "Runs ended, by final status", ["workflow", "status"], registry=self.registry
        )
        self.steps = Counter("namel3ss_steps", "Steps of finished runs", ["target", "status"], registry=self.registry)
        self.retries = Counter(
            "namel3ss_step_retries",
            "Retries of steps of finished runs (tries after a step's first)",
            ["workflow", "block", "target"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "namel3ss_dead_letters",
            "Steps of finished runs whose message went to a dead-letter queue",
            ["workflow", "block", "target", "queue"],
            registry=self.registry,
        )
        self.block_duration = Histogram(
            "namel3ss_block_duration_seconds",
            "Blocks of finished runs",
            ["strategy"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.loser_seconds = Counter(
            "namel3ss_loser_worker_seconds",
            "Seconds race and any_success losers ran",
            ["strategy"],
            registry=self.registry,
        )
        if depths is not None:
            self.registry.register(_Queues(depths))
        # (run id, node) of race blocks whose losers had not all reported when the run ended: their strategy,
        # and the loser seconds the run's end said
        self.pending: dict[tuple[str, str], tuple[str, float]] = {}

    def observe(self, event: Event, runs: CoordinationStore | None = None) -> None:
        """Count what ``event`` says, if it is a run's start or end. With ``runs`` (the coordination store),
        the seconds of a race's losers still stopping at the run's end wait until they all reported
        (``look_at_losers``)."""
        data = event.data
        workflow = str(data.get("workflow_name") or "")
        if event.event_type == EventType.WORKFLOW_STARTED:
            self.runs_started.labels(workflow).inc()
        elif event.event_type == EventType.WORKFLOW_COMPLETED and data.get("instance_id"):
            self.runs_finished.labels(workflow, str(data.get("status"))).inc()
            for block in data.get("blocks") or []:
                if block.get("duration_ms") is not None:
                    self.block_duration.labels(block["strategy"]).observe(float(block["duration_ms"]) / 1000)
                if runs is not None and block.get("strategy") in RACING:
                    key = (str(data["instance_id"]), str(block.get("node")))
                    self.pending[key] = (str(block["strategy"]), float(block.get("loser_seconds") or 0))
                    self._look(runs, key)
                elif block.get("loser_seconds"):
                    self.loser_seconds.labels(block["strategy"]).inc(float(block["loser_seconds"]))
                for step in block.get("steps") or []:
                    target = str(step.get("target"))
                    self.steps.labels(target, str(step.get("status"))).inc()
                    if step.get("retries"):
                        self.retries.labels(workflow, str(block.get("node")), target).inc(int(step["retries"]))
                    if step.get("dead_letter"):
                        self.dead_letters.labels(workflow, str(block.get("node")), target, step["dead_letter"]).inc()

    def look_at_losers(self, runs: CoordinationStore) -> None:
        """Count the loser seconds of each waiting block whose losers have all reported since."""
        for key in list(self.pending):
            self._look(runs, key)

    def _look(self, runs: CoordinationStore, key: tuple[str, str]) -> None:
        strategy, at_the_end = self.pending[key]
        run_id, node = key
        (text,) = runs.get_fields(run_id, [fields.node_result(node)])
        metadata: Mapping[str, Any] = (json.loads(text).get("metadata") or {}) if text else {}
        if text and int(metadata.get("losers_pending") or 0) > 0:
            return  # still stopping: the block's result is rewritten as they report
        # All reported; or the record expired, and what the run's end said is all there is.
        seconds = float(metadata.get("loser_worker_seconds") or 0) if text else at_the_end
        if seconds:
            self.loser_seconds.labels(strategy).inc(seconds)
        del self.pending[key]

    def follow(self, store: EventStore, stop: threading.Event, runs: CoordinationStore | None = None) -> None:
        """Observe every event from now on, until ``stop`` is set (with ``runs``: see ``observe``)."""
        after = store.newest()
        next_look = time.monotonic() + LOSERS_EVERY
        while not stop.is_set():
            for stream_id, event in store.read(after, count=500, block=POLL):
                after = stream_id
                self.observe(event, runs)
            if runs is not None and self.pending and time.monotonic() >= next_look:
                self.look_at_losers(runs)
                next_look = time.monotonic() + LOSERS_EVERY

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def queue_depths(app: Any, pools: Iterable[str], dead_letters: Iterable[str]) -> QueueDepths:
    """What ``_Queues`` asks at each scrape: each queue's message count, from the broker (a passive declare:
    RabbitMQ's count, or the sum of the Redis priority lists kombu keeps)."""
    wanted = [(q, "pool") for q in dict.fromkeys(pools)] + [(q, "dead_letters") for q in dict.fromkeys(dead_letters)]

    def depths() -> Iterable[tuple[str, str, int]]:
        found = []
        with app.connection_for_read() as connection:
            channel = connection.channel()
            try:
                for queue, kind in wanted:
                    try:
                        _name, messages, _consumers = channel.queue_declare(queue, passive=True)
                    except connection.channel_errors:  # never declared: nothing waits there
                        channel = connection.channel()
                        messages = 0
                    found.append((queue, kind, int(messages)))
            finally:
                channel.close()
        return found

    return depths


def start(metrics: RunMetrics, store: EventStore, runs: CoordinationStore | None = None) -> threading.Event:
    """Follow the stream in a daemon thread (with ``runs``: see ``RunMetrics.observe``); set the returned event
    to stop it."""
    stop = threading.Event()
    threading.Thread(target=metrics.follow, args=(store, stop, runs), name="n3-metrics", daemon=True).start()
    return stop
