"""The queue-depth autoscaler: its sizing rule, its configuration errors, and scaling on an in-memory broker."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from celery import Celery
from kombu import Queue
from kombu.utils.imports import symbol_by_name

from namel3ss_celery.errors import ConfigurationError
from namel3ss_celery.routing.autoscale import QueueDepthAutoscaler, autoscaler_setting, keepalive_from_env
from namel3ss_celery.routing.scaling import ScalingRule, desired_processes
from namel3ss_celery.spec import load_program
from tests.sockets import connects

RULE = ScalingRule(target_value=2, scale_up_threshold=3, scale_down_threshold=1)


@pytest.mark.parametrize(
    ("depth", "processes", "bounds", "expected"),
    [
        (0, 1, (1, 4), 1),  # nothing waits, already at the floor
        (3, 1, (1, 4), 1),  # 3 per process is not above 3: hold
        (4, 1, (1, 4), 2),  # 4 per process: up to ceil(4 / 2)
        (7, 1, (1, 4), 4),  # up to ceil(7 / 2)
        (20, 1, (1, 4), 4),  # wants 10, capped at the max
        (20, 4, (1, 4), 4),  # already at the max
        (7, 3, (1, 4), 3),  # 2.33 per process, between the thresholds: hold
        (4, 4, (1, 4), 4),  # exactly 1 per process is not below 1: hold
        (3, 4, (1, 4), 2),  # 0.75 per process: down to ceil(3 / 2)
        (0, 4, (1, 4), 1),  # drained: down to the floor
        (0, 4, (0, 4), 0),  # a floor of 0 lets the pool empty
        (1, 0, (0, 4), 1),  # no process and one message: up
        (0, 0, (0, 4), 0),  # no process, nothing waits
        (0, 0, (2, 4), 2),  # below the floor: up to it
        (9, 6, (1, 4), 4),  # above the ceiling (autoscale max lowered): down to it
        (100, 6, (1, 4), 4),
        (5, 1, (3, 3), 3),  # min == max
    ],
)
def test_desired_processes_follows_depth_with_hysteresis(
    depth: int, processes: int, bounds: tuple[int, int], expected: int
) -> None:
    low, high = bounds
    assert desired_processes(depth, processes, RULE, min_processes=low, max_processes=high) == expected


@pytest.mark.parametrize(
    ("rule", "depth", "processes", "expected"),
    [
        (ScalingRule(5, 10, 2), 11, 1, 3),  # the IR defaults: 11 per process > 10, up to ceil(11 / 5)
        (ScalingRule(5, 10, 2), 10, 1, 1),
        (ScalingRule(5, 10, 2), 11, 3, 3),  # after growing, 3.7 per process sits between the thresholds
        (ScalingRule(5, 10, 2), 5, 3, 1),  # 1.7 per process < 2: down to 1
        (ScalingRule(2, 2, 2), 5, 2, 3),  # no dead band: 2.5 > 2
        (ScalingRule(2, 2, 2), 3, 2, 2),  # 1.5 < 2 but ceil(3 / 2) is 2 already
        (ScalingRule(0.5, 1, 0.5), 3, 2, 6),  # fractional targets
    ],
)
def test_desired_processes_with_other_rules(rule: ScalingRule, depth: int, processes: int, expected: int) -> None:
    assert desired_processes(depth, processes, rule, min_processes=1, max_processes=10) == expected


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"auto_scaling": False}, "has auto_scaling: false"),
        ({"scaling_metric": "cpu"}, "scales on cpu, and QueueDepthAutoscaler follows queue_depth only"),
        ({"target_value": 0}, r"target_value must be above 0 \(got 0\)"),
        ({"scale_up_threshold": 1, "scale_down_threshold": 2}, r"scale_down_threshold \(2\) is above"),
    ],
)
def test_a_pool_the_rule_cannot_follow_is_refused(pool: dict[str, Any], message: str) -> None:
    spec = load_program({"worker_pools": [{"name": "p", "queue_name": "q", **pool}]}).worker_pools[0]
    with pytest.raises(ConfigurationError, match=f"worker pool 'p' {message}") as caught:
        ScalingRule.from_pool(spec)
    assert caught.value.setting == "worker_autoscaler"


def test_the_rule_takes_the_pools_thresholds() -> None:
    pool = {"name": "p", "queue_name": "q", "target_value": 3, "scale_up_threshold": 6, "scale_down_threshold": 1}
    spec = load_program({"worker_pools": [pool]}).worker_pools[0]
    assert ScalingRule.from_pool(spec) == ScalingRule(3, 6, 1)


def test_the_setting_names_the_class() -> None:
    assert autoscaler_setting() == "namel3ss_celery.routing.autoscale:QueueDepthAutoscaler"
    assert symbol_by_name(autoscaler_setting()) is QueueDepthAutoscaler


@pytest.mark.parametrize(("value", "seconds"), [(None, 30.0), ("", 30.0), ("2", 2.0), ("0.25", 0.25)])
def test_keepalive_comes_from_autoscale_keepalive(value: str | None, seconds: float) -> None:
    environ = {} if value is None else {"AUTOSCALE_KEEPALIVE": value}
    assert keepalive_from_env(environ) == seconds


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_keepalive_that_is_not_positive_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="AUTOSCALE_KEEPALIVE must be seconds above 0") as caught:
        keepalive_from_env({"AUTOSCALE_KEEPALIVE": value})
    assert caught.value.setting == "AUTOSCALE_KEEPALIVE"


# --- the autoscaler itself ---------------------------------------------------------------------------------------


class FakePool:
    """What the autoscaler uses of Celery's prefork TaskPool."""

    def __init__(self, processes: int) -> None:
        self.num_processes = processes

    def grow(self, n: int) -> None:
        self.num_processes += n

    def shrink(self, n: int) -> None:
        self.num_processes -= n

    def maintain_pool(self) -> None:
        pass


@pytest.fixture
def program_file(tmp_path: Path) -> Path:
    pool = {
        "name": "elastic",
        "queue_name": "elastic-q",
        "min_workers": 1,
        "max_workers": 4,
        "target_value": 2,
        "scale_up_threshold": 3,
        "scale_down_threshold": 1,
    }
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump({"worker_pools": [pool]}))
    return path


@pytest.fixture
def memory_app() -> Iterator[tuple[Celery, str]]:
    """An app on kombu's in-process broker, consuming one fresh queue."""
    queue = f"autoscale-{uuid.uuid4().hex[:8]}"
    app = Celery("autoscale-unit", broker="memory://", set_as_current=False)
    app.conf.update(task_queues=[Queue(queue)], task_default_queue=queue)
    app.amqp.queues.select([queue])
    yield app, queue
    app.close()


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "NAMEL3SS_CELERY_PROGRAM and NAMEL3SS_CELERY_POOL are not set"),
        ({"NAMEL3SS_CELERY_POOL": "elastic"}, "NAMEL3SS_CELERY_PROGRAM is not set"),
        ({"NAMEL3SS_CELERY_PROGRAM": "PROGRAM"}, "NAMEL3SS_CELERY_POOL is not set"),
    ],
)
def test_without_program_or_pool_it_refuses_to_start(
    env: dict[str, str], missing: str, program_file: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, str(program_file) if value == "PROGRAM" else value)
    with pytest.raises(ConfigurationError, match=missing) as caught:
        QueueDepthAutoscaler(FakePool(1), 4, 1)
    assert caught.value.setting == missing.split()[0]


def test_an_unknown_pool_or_unreadable_program_is_named(
    program_file: Path, memory_app: tuple[Celery, str], clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = SimpleNamespace(app=memory_app[0])
    monkeypatch.setenv("NAMEL3SS_CELERY_PROGRAM", str(program_file))
    monkeypatch.setenv("NAMEL3SS_CELERY_POOL", "gpu")
    with pytest.raises(ConfigurationError, match="NAMEL3SS_CELERY_POOL=gpu: no worker pool named 'gpu'") as caught:
        QueueDepthAutoscaler(FakePool(1), 4, 1, worker=worker)
    assert caught.value.setting == "NAMEL3SS_CELERY_POOL"
    monkeypatch.setenv("NAMEL3SS_CELERY_PROGRAM", str(program_file.with_name("missing.yaml")))
    monkeypatch.setenv("NAMEL3SS_CELERY_POOL", "elastic")
    with pytest.raises(ConfigurationError, match="cannot read program file") as caught:
        QueueDepthAutoscaler(FakePool(1), 4, 1, worker=worker)
    assert caught.value.setting == "NAMEL3SS_CELERY_PROGRAM"


@pytest.fixture
def pool_env(program_file: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEL3SS_CELERY_PROGRAM", str(program_file))
    monkeypatch.setenv("NAMEL3SS_CELERY_POOL", "elastic")


def test_keepalive_is_read_when_built(
    pool_env: None, memory_app: tuple[Celery, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = SimpleNamespace(app=memory_app[0])
    monkeypatch.setenv("AUTOSCALE_KEEPALIVE", "1.5")
    assert QueueDepthAutoscaler(FakePool(1), 4, 1, worker=worker).keepalive == 1.5
    assert QueueDepthAutoscaler(FakePool(1), 4, 1, worker=worker, keepalive=0.5).keepalive == 0.5
    with pytest.raises(ConfigurationError, match="keepalive must be seconds above 0"):
        QueueDepthAutoscaler(FakePool(1), 4, 1, worker=worker, keepalive=0)
    with pytest.raises(ConfigurationError, match="reads the broker through its worker"):
        QueueDepthAutoscaler(FakePool(1), 4, 1)


def test_it_grows_with_the_queue_and_shrinks_after_keepalive(pool_env: None, memory_app: tuple[Celery, str]) -> None:
    app, queue = memory_app
    pool = FakePool(1)
    scaler = QueueDepthAutoscaler(pool, 4, 1, worker=SimpleNamespace(app=app), keepalive=0.2)
    try:
        scaler.maybe_scale()
        assert (pool.num_processes, scaler.depth) == (1, 0)  # a queue never declared holds nothing
        for _ in range(5):
            app.send_task("autoscale.sleep", args=(1,), queue=queue, ignore_result=True)
        time.sleep(0.25)  # past the measuring interval
        scaler.maybe_scale()
        assert (pool.num_processes, scaler.depth) == (3, 5)  # 5 per process > 3: ceil(5 / 2)
        info = scaler.info()
        assert info["metric"] == "queue_depth" and info["pool"] == "elastic" and info["qty"] == 3
        with app.connection_for_write() as connection:
            Queue(queue, channel=connection.default_channel).purge()
        time.sleep(0.25)
        scaler.maybe_scale()
        assert pool.num_processes == 1  # drained, and nothing was received or added for the keepalive
    finally:
        scaler.close()


def test_it_waits_keepalive_before_shrinking(pool_env: None, memory_app: tuple[Celery, str]) -> None:
    app, _ = memory_app
    pool = FakePool(1)
    scaler = QueueDepthAutoscaler(pool, 4, 1, worker=SimpleNamespace(app=app), keepalive=30)
    try:
        scaler.scale_up(3)  # as if a backlog had just grown the pool
        scaler.maybe_scale()
        assert (pool.num_processes, scaler.qty) == (4, 1)  # wants 1, but the last growth is not 30 s old
    finally:
        scaler.close()


def test_an_unreadable_broker_keeps_the_pool(pool_env: None, caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("autoscale-down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.broker_connection_timeout = 0.5
    pool = FakePool(2)
    scaler = QueueDepthAutoscaler(pool, 4, 1, worker=SimpleNamespace(app=app), keepalive=5)
    try:
        with caplog.at_level(logging.WARNING), connects() as attempted:
            scaler.maybe_scale()
            scaler.maybe_scale()  # within the second: not asked again
        assert (pool.num_processes, scaler.depth) == (2, None)
        assert "cannot read the depth of celery" in caplog.text and "keeping 2 process(es)" in caplog.text
        assert caplog.text.count("cannot read") == 1
        # One attempt to connect, no retries holding up the worker (counted, not timed).
        assert [address for address in attempted if address == ("127.0.0.1", 1)] == [("127.0.0.1", 1)]
    finally:
        scaler.close()
        app.close()


class FakeHub:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> None:
        self.calls.append((delay, callback))


def test_a_message_within_the_interval_schedules_one_more_check(pool_env: None, memory_app: tuple[Celery, str]) -> None:
    app, queue = memory_app
    hub, pool = FakeHub(), FakePool(1)
    scaler = QueueDepthAutoscaler(pool, 4, 1, worker=SimpleNamespace(app=app, hub=hub), keepalive=5)
    try:
        scaler.maybe_scale()  # measures: nothing waits
        for _ in range(8):
            app.send_task("autoscale.sleep", args=(1,), queue=queue, ignore_result=True)
        scaler.maybe_scale()
        scaler.maybe_scale()
        assert (pool.num_processes, scaler.depth) == (1, 0)  # within the second: the last depth
        assert len(hub.calls) == 1 and 0 < hub.calls[0][0] <= 1.0  # one check, when the second is up
        time.sleep(hub.calls[0][0])
        hub.calls[0][1]()
        assert (pool.num_processes, scaler.depth) == (4, 8)
    finally:
        scaler.close()
