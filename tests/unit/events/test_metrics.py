"""The series ``RunMetrics`` makes of the adapter's run events (no broker: events observed directly)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from namel3ss_celery.events.lifecycle import SOURCE
from namel3ss_celery.events.metrics import RunMetrics
from namel3ss_celery.events.model import Event, EventType


def samples(metrics: RunMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def ended(workflow: str, status: str, blocks: list[dict[str, Any]]) -> Event:
    data = {"workflow_name": workflow, "instance_id": "run-1", "status": status, "blocks": blocks}
    return Event.new(EventType.WORKFLOW_COMPLETED, SOURCE, data)


def test_runs_steps_retries_and_dead_letters_are_counted_from_a_finished_run() -> None:
    metrics = RunMetrics()
    metrics.observe(Event.new(EventType.WORKFLOW_STARTED, SOURCE, {"workflow_name": "w", "instance_id": "run-1"}))
    steps = [
        {"target": "fetch", "status": "completed", "retries": 2},
        {"target": "fetch", "status": "completed", "retries": 1},
        {"target": "parse", "status": "failed", "retries": 0, "dead_letter": "parse.dead"},
    ]
    block = {"node": "b", "strategy": "all", "status": "failed", "duration_ms": 1500, "steps": steps}
    metrics.observe(ended("w", "failed", [block]))
    found = samples(metrics)
    assert found[("namel3ss_runs_started_total", (("workflow", "w"),))] == 1
    assert found[("namel3ss_runs_finished_total", (("status", "failed"), ("workflow", "w")))] == 1
    assert found[("namel3ss_steps_total", (("status", "completed"), ("target", "fetch")))] == 2
    assert found[("namel3ss_step_retries_total", (("block", "b"), ("target", "fetch"), ("workflow", "w")))] == 3
    assert not any(name == "namel3ss_step_retries_total" and ("target", "parse") in labels for name, labels in found)
    assert found[("namel3ss_block_duration_seconds_sum", (("strategy", "all"),))] == 1.5
    dead = (("block", "b"), ("queue", "parse.dead"), ("target", "parse"), ("workflow", "w"))
    assert found[("namel3ss_dead_letters_total", dead)] == 1
    assert sum(value for (name, _labels), value in found.items() if name == "namel3ss_dead_letters_total") == 1


def test_a_summary_from_before_retries_were_counted_counts_none() -> None:
    metrics = RunMetrics()
    block = {"node": "b", "strategy": "all", "status": "completed", "steps": [{"target": "t", "status": "completed"}]}
    metrics.observe(ended("w", "completed", [block]))
    assert not any(name == "namel3ss_step_retries_total" for name, _labels in samples(metrics))


def race_ended(loser_seconds: float) -> Event:
    block = {
        "node": "r",
        "strategy": "race",
        "status": "completed",
        "duration_ms": 100,
        "loser_seconds": loser_seconds,
        "steps": [{"target": "t", "status": "completed"}, {"target": "t", "status": "cancelled"}],
    }
    return ended("w", "completed", [block])


def filed(store: Any, pending: int, seconds: float) -> None:
    from namel3ss_celery.plan import fields

    result = {"metadata": {"losers_pending": pending, "loser_worker_seconds": seconds}}
    store.set_fields("run-1", {fields.node_result("r"): json.dumps(result)})


LOSERS = ("namel3ss_loser_worker_seconds_total", (("strategy", "race"),))


def test_losers_still_stopping_when_their_run_ended_count_once_they_reported() -> None:
    from namel3ss_celery.worker.store import MemoryStore

    store = MemoryStore()
    store.create_run("run-1", {"name": "w"}, 60)
    filed(store, pending=1, seconds=0.0)  # decided: the loser was asked to stop and has not said it did
    metrics = RunMetrics()
    metrics.observe(race_ended(0.0), store)
    assert LOSERS not in samples(metrics)
    metrics.look_at_losers(store)
    assert LOSERS not in samples(metrics)  # still stopping
    filed(store, pending=0, seconds=2.5)  # it reported: the block's result is rewritten
    metrics.look_at_losers(store)
    metrics.look_at_losers(store)
    assert samples(metrics)[LOSERS] == 2.5  # once
    assert metrics.pending == {}


def test_losers_that_reported_before_their_run_ended_count_at_once() -> None:
    from namel3ss_celery.worker.store import MemoryStore

    store = MemoryStore()
    store.create_run("run-1", {"name": "w"}, 60)
    filed(store, pending=0, seconds=1.25)
    metrics = RunMetrics()
    metrics.observe(race_ended(1.25), store)
    assert samples(metrics)[LOSERS] == 1.25 and metrics.pending == {}


def test_a_run_whose_record_expired_counts_what_its_end_said() -> None:
    from namel3ss_celery.worker.store import MemoryStore

    metrics = RunMetrics()
    metrics.observe(race_ended(0.5), MemoryStore())
    assert samples(metrics)[LOSERS] == 0.5 and metrics.pending == {}


def test_without_the_store_the_runs_end_is_all_there_is() -> None:
    metrics = RunMetrics()
    metrics.observe(race_ended(0.75))
    assert samples(metrics)[LOSERS] == 0.75
