"""QueueDepthAutoscaler in a real prefork worker: the pool follows the queue's depth, up and back down.

The worker runs ``--autoscale=4,1`` with a pool of target_value 2, scale up
above 3 waiting messages per process, scale down below 1, and a 2 s
keep-alive, on the tests' second Redis database (``redis_aux_url``). The broker
reads are also checked on RabbitMQ.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kombu import Connection, Exchange, Queue

from namel3ss_celery.routing import redis_priority_lists
from namel3ss_celery.routing.queue_depth import broker_depth
from tests.waiting import poll

from .autoscale_app import make_app
from .workers import WorkerProcess

pytestmark = pytest.mark.integration

KEEPALIVE = 2.0
SLEEP = 1.5  # seconds each task sleeps
BACKLOG = 20
POOL = {
    "name": "elastic",
    "min_workers": 1,
    "max_workers": 4,
    "target_value": 2,
    "scale_up_threshold": 3,
    "scale_down_threshold": 1,
}


@dataclass
class Elastic:
    """The test's app, its queue, the autoscaling worker and a Redis client on the broker."""

    app: Any
    queue: str
    worker: WorkerProcess
    broker: redis.Redis
    started: float = field(default_factory=time.monotonic)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds since started, processes)

    def stats(self) -> dict[str, Any]:
        replies = self.app.control.inspect([self.worker.hostname], timeout=1.0).stats() or {}
        assert self.worker.hostname in replies, f"no stats from the worker:\n{self.worker.log()}"
        stats: dict[str, Any] = replies[self.worker.hostname]
        return stats

    def processes(self) -> int:
        count = len(self.stats()["pool"]["processes"])
        self.timeline.append((round(time.monotonic() - self.started, 1), count))
        return count

    def waiting(self) -> int:
        return sum(int(self.broker.llen(key)) for key in redis_priority_lists(self.queue))

    def done(self, count: int) -> bool:
        """``count`` tasks were started in all, and none is running or waiting on the worker."""
        if self.stats()["total"].get("autoscale.sleep", 0) < count:
            return False
        inspect = self.app.control.inspect([self.worker.hostname], timeout=1.0)
        active = (inspect.active() or {}).get(self.worker.hostname)
        reserved = (inspect.reserved() or {}).get(self.worker.hostname)
        assert active is not None and reserved is not None, f"the worker did not answer:\n{self.worker.log()}"
        return not active and not reserved

    def publish(self, count: int) -> None:
        for _ in range(count):
            self.app.send_task("autoscale.sleep", args=(SLEEP,), queue=self.queue, ignore_result=True)


@pytest.fixture
def elastic(redis_aux_url: str, tmp_path: Path) -> Iterator[Elastic]:
    queue = f"n3autoscale-{uuid.uuid4().hex[:8]}"
    program = tmp_path / "program.yaml"
    program.write_text(yaml.safe_dump({"worker_pools": [{**POOL, "queue_name": queue}]}))
    env = {
        "N3_AUTOSCALE_BROKER": redis_aux_url,
        "N3_AUTOSCALE_BACKEND": redis_aux_url,
        "N3_AUTOSCALE_QUEUE": queue,
        "NAMEL3SS_CELERY_PROGRAM": str(program),
        "NAMEL3SS_CELERY_POOL": "elastic",
        "AUTOSCALE_KEEPALIVE": str(KEEPALIVE),
    }
    app = make_app(redis_aux_url, redis_aux_url, queue)
    worker = WorkerProcess(
        "tests.integration.autoscale_app", env, tmp_path, concurrency=1, queues=[queue], extra_args=["--autoscale=4,1"]
    )
    broker = redis.Redis.from_url(redis_aux_url)
    try:
        worker.wait_ready(app)
        yield Elastic(app, queue, worker, broker)
    finally:
        worker.stop()
        broker.delete(*redis_priority_lists(queue))
        broker.close()
        app.close()


@pytest.mark.timeout(180)
def test_the_pool_follows_the_queue_depth_up_and_back_down(elastic: Elastic) -> None:
    stats = elastic.stats()
    assert stats["autoscaler"]["metric"] == "queue_depth" and stats["autoscaler"]["pool"] == "elastic"
    assert (stats["autoscaler"]["min"], stats["autoscaler"]["max"]) == (1, 4)
    assert elastic.processes() == 1

    # Three messages are at most 3 per process, not above the threshold: the pool keeps one process
    # (Celery's own rule would grow it to the 3 messages it reserves).
    elastic.publish(3)
    assert poll(lambda: elastic.processes() == 1 and elastic.done(3), 30) is not None
    assert max(count for _, count in elastic.timeline) == 1, elastic.timeline
    assert elastic.waiting() == 0

    # A backlog of 20: 19 waiting over one process, up to ceil(19 / 2) capped at 4.
    published = time.monotonic()
    elastic.publish(BACKLOG)
    grew = poll(lambda: elastic.processes() > 1, 30)
    assert grew is not None, f"the pool did not grow: {elastic.timeline}\n{elastic.worker.log()}"
    reached_max = poll(lambda: elastic.processes() == 4, 30, every=0.25)
    assert reached_max is not None, f"the pool did not reach 4: {elastic.timeline}\n{elastic.worker.log()}"
    drained = poll(lambda: elastic.processes() > 0 and elastic.done(3 + BACKLOG), 90)
    assert drained is not None, f"the backlog did not drain: {elastic.timeline}\n{elastic.worker.log()}"
    ran = time.monotonic() - published
    assert ran < BACKLOG * SLEEP, f"{BACKLOG} tasks of {SLEEP}s took {ran:.1f}s: no more than one process ran"

    # Drained: below 1 per process, so after the keep-alive the pool goes back to its floor.
    shrank = poll(lambda: elastic.processes() == 1, 30)
    assert shrank is not None, f"the pool did not shrink back: {elastic.timeline}\n{elastic.worker.log()}"
    log = elastic.worker.log()
    assert "Queue depth" in log and "scaling up to" in log and "Scaling down" in log
    print(
        f"\ngrew after {grew:.1f}s, reached 4 after {reached_max:.1f}s more, {BACKLOG} tasks done {ran:.1f}s after "
        f"publishing, back to 1 process {shrank:.1f}s after draining; timeline {elastic.timeline}"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_broker_depth_counts_ready_messages_on_both_brokers(
    broker: str, redis_aux_url: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else redis_aux_url
    name = f"n3depth-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments={"x-max-priority": 10})
    options = {"priority_steps": list(range(10)), "queue_order_strategy": "priority", "confirm_publish": True}
    with Connection(url, transport_options=options) as connection:
        assert broker_depth(connection, [name]) == 0  # not declared yet
        producer = connection.Producer()
        for priority in (0, 0, 3, 9, 5):
            producer.publish(
                {"n": priority}, exchange=queue.exchange, routing_key=name, declare=[queue], priority=priority
            )
        try:
            counted = poll(lambda: broker_depth(connection, [name, name]) == 5, 10, every=0.2)
            assert counted is not None, broker_depth(connection, [name])
            assert broker_depth(connection, [name, f"{name}-missing"]) == 5
            if broker == "redis":  # the count did come from the priority lists
                client = redis.Redis.from_url(redis_aux_url)
                assert [int(client.llen(key)) for key in redis_priority_lists(name)] == [2, 0, 0, 1, 0, 1, 0, 0, 0, 1]
                client.close()
        finally:
            queue.bind(connection.default_channel).delete()


@pytest.mark.timeout(60)
def test_a_worker_without_its_pool_refuses_to_start(redis_aux_url: str, tmp_path: Path, clean_env: None) -> None:
    """No NAMEL3SS_CELERY_POOL: the worker stops at start-up, naming it, instead of using Celery's own rule."""
    program = tmp_path / "program.yaml"
    program.write_text(yaml.safe_dump({"worker_pools": [{**POOL, "queue_name": "unused"}]}))
    env = {
        "N3_AUTOSCALE_BROKER": redis_aux_url,
        "N3_AUTOSCALE_BACKEND": redis_aux_url,
        "N3_AUTOSCALE_QUEUE": f"n3autoscale-{uuid.uuid4().hex[:8]}",
        "NAMEL3SS_CELERY_PROGRAM": str(program),
    }
    worker = WorkerProcess(
        "tests.integration.autoscale_app", env, tmp_path, concurrency=1, extra_args=["--autoscale=4,1"]
    )
    try:
        code = worker.process.wait(45)
    finally:
        worker.stop()
    assert code != 0
    assert "ConfigurationError" in worker.log_path.read_text()
    assert "NAMEL3SS_CELERY_POOL is not set" in worker.log_path.read_text()
