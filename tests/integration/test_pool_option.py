"""`celery -A APP worker --n3-pool NAME`: a user's own worker runs with the pool's scaling, limits and environment."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from namel3ss_celery import Namel3ssCelery, Settings

from .app import make_app
from .workers import WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 60
STEP_MODULES = "tests.integration.steps,tests.integration.env_steps"
ENVIRON = "tests.integration.env_steps:environ"
MARK = "N3_POOL_OPTION_MARK"  # set only by the pool's environment_variables, never by the test


@dataclass
class Served:
    """A ``celery worker --n3-pool`` of the test app, and a client of the same app."""

    worker: WorkerProcess
    n3: Namel3ssCelery
    program: Path
    tag: str  # queues are <tag>-sized (the pool's) and <tag>-default (the app's)

    def stats(self) -> dict[str, Any]:
        replies = self.n3.app.control.inspect([self.worker.hostname], timeout=5).stats() or {}
        assert self.worker.hostname in replies, self.worker.log()
        return dict(replies[self.worker.hostname])

    def consumed_queues(self) -> set[str]:
        replies = self.n3.app.control.inspect([self.worker.hostname], timeout=5).active_queues() or {}
        return {queue["name"] for queue in replies[self.worker.hostname]}


Start = Callable[..., Served]


def sized_pool(tag: str, **changes: Any) -> dict[str, Any]:
    """A prefork pool that scales from 1 to 3 processes, times steps out after 2 s and sets one variable."""
    pool = {
        "name": "sized",
        "queue_name": f"{tag}-sized",
        "auto_scaling": True,
        "min_workers": 1,
        "max_workers": 3,
        "timeout_seconds": 2,
        "environment_variables": {MARK: f"from-the-pool-{tag}"},
        "worker_config": {"max_tasks_per_child": 50},
    }
    return {**pool, **changes}


@pytest.fixture
def start(redis_url: str, tmp_path: Path) -> Iterator[Start]:
    """Start ``celery -A tests.integration.app worker --n3-pool sized`` (no -c, no -P unless given; ``{tag}`` in
    an option is the run's tag) for a ``sized_pool`` with ``changes``; wait until it answers unless told not to."""
    assert MARK not in os.environ
    started: list[Served] = []

    def run(
        changes: dict[str, Any],
        *extra: str,
        wait: bool = True,
        task_queue: dict[str, Any] | None = None,
        steps: list[dict[str, Any]] | None = None,
    ) -> Served:
        tag = uuid.uuid4().hex[:6]
        pool = sized_pool(tag, **changes)
        steps = steps or [
            {"name": "env", "target": ENVIRON, "variable": MARK},
            {"name": "late", "target": "stubborn", "seconds": 30},
        ]
        program: dict[str, Any] = {
            "worker_pools": [pool],
            "parallel_blocks": [
                {"name": "b", "strategy": "collect", "steps": [{**step, "worker_pool": "sized"} for step in steps]}
            ],
        }
        if task_queue is not None:
            program["task_queues"] = [{"name": pool["queue_name"], **task_queue}]
        path = tmp_path / f"program-{tag}.yaml"
        path.write_text(yaml.safe_dump(program))
        default_queue = f"{tag}-default"
        env = {
            "N3_TEST_BROKER": redis_url,
            "N3_TEST_BACKEND": redis_url,
            "N3_TEST_QUEUE": default_queue,
            "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
            "NAMEL3SS_CELERY_PROGRAM": str(path),
        }
        app = make_app(redis_url, redis_url, default_queue)
        settings = Settings.from_mapping({**env, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url})
        n3 = Namel3ssCelery(app, settings=settings)
        name = f"n3pool-{tag}"
        command = [sys.executable, "-m", "celery", "-A", "tests.integration.app", "worker", "-n", f"{name}@%h"]
        command += ["--without-mingle", "--without-gossip", "-l", "INFO", "--n3-pool", pool["name"]]
        command += [option.format(tag=tag) for option in extra]
        worker = WorkerProcess("tests.integration.app", env, tmp_path, command=command, name=name)
        served = Served(worker, n3, path, tag)
        started.append(served)
        if wait:
            worker.wait_ready(app)
        return served

    yield run
    for served in started:
        served.worker.stop()
        served.n3.close()
        served.n3.app.close()
        served.n3.app.backend.client.close()


def test_the_worker_runs_with_the_pools_scaling_time_limits_and_environment(start: Start) -> None:
    served = start({})
    stats = served.stats()
    autoscaler = stats["autoscaler"]
    assert (autoscaler["max"], autoscaler["min"]) == (3, 1)
    assert autoscaler["metric"] == "queue_depth"  # the pool's own rule, not Celery's
    assert stats["pool"]["timeouts"] == [2.0, 12.0]  # soft: timeout_seconds; hard: 10 s later
    assert stats["pool"]["max-tasks-per-child"] == 50
    assert served.consumed_queues() == {f"{served.tag}-sized"}

    started = time.monotonic()
    result = served.n3.dispatch(str(served.program)).get(timeout=WAIT)
    took = time.monotonic() - started
    final = result.blocks["b"].final_result
    assert final["env"]["result"] == f"from-the-pool-{served.tag}"  # set in the child process that ran the step
    assert final["late"]["status"] == "failed" and "StepTimeout" in final["late"]["error"]
    assert 2 <= took < 20  # the step sleeps 30 s and checks nothing: the pool's 2 s soft time limit stopped it


@pytest.mark.parametrize(
    ("extra", "scaling", "timeouts", "queues"),
    [
        (["--concurrency=2", "--soft-time-limit=30"], {"processes": 2}, [30.0, 12.0], ["sized"]),
        (
            ["--autoscale=4,2", "--time-limit=40", "-Q", "{tag}-default"],
            {"autoscale": (4, 2)},
            [2.0, 40.0],
            ["sized", "default"],
        ),
    ],
    ids=["concurrency", "autoscale-and-Q"],
)
def test_an_option_given_on_the_command_line_wins_over_the_pools(
    start: Start, extra: list[str], scaling: dict[str, Any], timeouts: list[float], queues: list[str]
) -> None:
    served = start({}, *extra)
    stats = served.stats()
    if "processes" in scaling:  # a fixed count: the pool's autoscaling is not applied at all
        assert "autoscaler" not in stats
        assert len(stats["pool"]["processes"]) == stats["pool"]["max-concurrency"] == scaling["processes"]
    else:
        assert (stats["autoscaler"]["max"], stats["autoscaler"]["min"]) == scaling["autoscale"]
    assert stats["pool"]["timeouts"] == timeouts  # the other limit is still the pool's
    assert stats["pool"]["max-tasks-per-child"] == 50
    assert served.consumed_queues() == {f"{served.tag}-{queue}" for queue in queues}  # the pool's queue besides -Q


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"worker_config": {"pool": "threads"}}, "worker pool 'sized': auto_scaling needs the prefork pool"),
        (
            {"auto_scaling": False, "worker_config": {"pool": "gevent"}},
            "worker pool 'sized' runs the gevent pool, which Celery patches in before it loads the app: give -P gevent",
        ),
    ],
    ids=["autoscale-on-threads", "gevent-without-P"],
)
def test_a_pool_that_cannot_run_as_specified_stops_the_worker_start(
    start: Start, changes: dict[str, Any], message: str
) -> None:
    served = start(changes, wait=False)
    served.worker.process.wait(timeout=45)
    log = served.worker.log()
    assert served.worker.process.returncode != 0, log
    assert f"ConfigurationError: celery worker --n3-pool sized: {message}" in log
    assert "ready." not in log


@pytest.mark.parametrize(("reliability", "acks_late"), [("at_least_once", True), ("at_most_once", False)])
def test_the_worker_keeps_the_task_queues_delivery_contract(start: Start, reliability: str, acks_late: bool) -> None:
    # The worker binds its tasks before --n3-pool serves the pool: the contract must still reach them.
    tag = uuid.uuid4().hex
    step = {"name": "s", "target": "slow_first_time", "seconds": 0, "tag": tag}
    served = start({}, task_queue={"reliability": reliability}, steps=[step])
    block = served.n3.dispatch(str(served.program)).get(timeout=WAIT).blocks["b"]
    assert block.results[0].result == {"delivery": 1, "acks_late": acks_late}
