"""The adapter's spans and span events, exported by the OpenTelemetry SDK to memory: a cancel and a deadline
each have a span of their own, carrying the run (and the block), whatever span was current; a retry is an
event of the span it happens in."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from namel3ss_celery import tracing
from namel3ss_celery.results import TaskStatus
from tests.unit.engine.test_conductor import block, report, start


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The SDK for this test only (the global tracer provider can be set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("namel3ss_celery"))
    monkeypatch.setattr(tracing, "configured", lambda: True)
    yield exporter
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_deadline_is_a_span_of_its_own_naming_the_run_and_the_block(exported: InMemorySpanExporter) -> None:
    conductor, recorder, run_id = start(block("all", 2, timeout_seconds=30))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 0)
    assert conductor.enforce_deadlines(now=time.time() + 60) == 1  # no span is current: a watchdog's look
    (deadline,) = named(exported, "n3.deadline")
    assert dict(deadline.attributes or {}) == {"namel3ss.run_id": run_id, "namel3ss.node": "b"}
    assert [(e.name, dict(e.attributes or {})) for e in deadline.events] == [
        ("deadline", {"namel3ss.run_id": run_id, "namel3ss.node": "b"})
    ]
    (settle,) = named(exported, "n3.settle")
    assert (settle.attributes or {})["namel3ss.outcome"] == "timeout"
    assert (settle.attributes or {})["namel3ss.node"] == "b"


def test_a_cancel_is_a_span_of_its_own_naming_the_run(exported: InMemorySpanExporter) -> None:
    spec = {"parallel_blocks": [block("all", 1), {**block("all", 1), "name": "after", "depends_on": ["b"]}]}
    conductor, _recorder, run_id = start(spec)
    conductor.cancel(run_id)
    (cancel,) = named(exported, "n3.cancel")
    assert dict(cancel.attributes or {}) == {"namel3ss.run_id": run_id}
    assert [e.name for e in cancel.events] == ["cancel"]
    settles = {(s.attributes or {})["namel3ss.node"]: s for s in named(exported, "n3.settle")}
    assert list(settles) == ["b"]  # the launched block; the one after it never launched
    assert (settles["b"].attributes or {})["namel3ss.outcome"] == "cancelled"


def test_a_retry_is_an_event_of_the_span_it_happens_in(exported: InMemorySpanExporter) -> None:
    with tracing.span("n3.step", target="t"):
        tracing.event("retry", attempt=2, countdown=1.5, error=None)
    (step,) = named(exported, "n3.step")
    assert [(e.name, dict(e.attributes or {})) for e in step.events] == [
        ("retry", {"namel3ss.attempt": 2, "namel3ss.countdown": 1.5})
    ]
    assert len(exported.get_finished_spans()) == 1


def test_nothing_is_recorded_while_no_sdk_is_configured() -> None:
    assert not tracing.configured()  # these tests never set the global tracer provider
    with tracing.span("n3.step", target="t") as current:
        tracing.event("cancel", run_id="r")
        assert not current.is_recording()


def test_each_terminated_loser_is_an_event_of_its_blocks_settle(exported: InMemorySpanExporter) -> None:
    conductor, recorder, _run_id = start(block("race", 3, terminate_losers=True))
    first, second, third = recorder.sent[:3]
    control = conductor.control(second)
    assert control.start(second.index, "w", "prefork", 1, "task-loser")  # a loser running on a prefork pool
    report(conductor, first, TaskStatus.COMPLETED, 1)  # the winner
    assert recorder.terminated == ["task-loser"]
    (settle,) = named(exported, "n3.settle")
    assert [(e.name, dict(e.attributes or {})) for e in settle.events] == [
        ("terminated", {"namel3ss.step": second.key, "namel3ss.task_id": "task-loser"})
    ]
    assert third.index == 2  # never started: nothing to terminate
