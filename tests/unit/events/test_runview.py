"""The run view's pages from the memory stores: the recent runs with their durations, and a failed step's
error in the run's page."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.events.runview import recent_runs, respond, run_view
from namel3ss_celery.events.runview_html import format_duration, render_run, render_runs
from namel3ss_celery.events.stream import MemoryEventStore
from namel3ss_celery.plan import fields
from namel3ss_celery.results import TaskStatus
from namel3ss_celery.worker.store import MemoryStore
from tests.unit.engine.test_conductor import block, record_of, report, start


class Cells(HTMLParser):
    """Each row of the recent runs (``data-run``): its cells' text, and the duration cell's ``data-duration-ms``;
    each step (``data-step``): its status and the text inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.durations: dict[str, str | None] = {}
        self.steps: dict[str, tuple[str | None, str]] = {}
        self._row: str | None = None
        self._step: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-run"):
            self._row = str(found["data-run"])
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self.rows[self._row].append("")
            if found.get("class") == "duration":
                self.durations[self._row] = found.get("data-duration-ms")
        elif tag == "li" and found.get("data-step"):
            self._step = str(found["data-step"])
            self.steps[self._step] = (found.get("data-status"), "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "li":
            self._step = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self.rows[self._row]:
            self.rows[self._row][-1] += data
        if self._step is not None:
            status, text = self.steps[self._step]
            self.steps[self._step] = (status, text + data)


def parsed(page: str) -> Cells:
    cells = Cells()
    cells.feed(page)
    return cells


def announce(events: MemoryEventStore, kind: EventType, run_id: str, at: float, **data: object) -> None:
    event = Event.new(kind, "test", {"instance_id": run_id, "workflow_name": f"wf-{run_id}", **data})
    event.timestamp = at
    events.append(event)


def test_the_recent_runs_show_each_runs_duration() -> None:
    events, store = MemoryEventStore(), MemoryStore()
    for run_id, status in (("ended", "completed"), ("quiet", "failed"), ("going", "running")):
        store.create_run(run_id, {**record_of(block("all", 1)), fields.STATUS: status}, 60)
    announce(events, EventType.WORKFLOW_STARTED, "ended", 1000.0)
    announce(events, EventType.WORKFLOW_COMPLETED, "ended", 1001.5, status="completed", duration_ms=1500.0)
    # ended, its end event not in the stream: its record's result says how long it took
    store.set_fields("quiet", {fields.RESULT: '{"total_duration_ms": 250.0}'})
    announce(events, EventType.WORKFLOW_STARTED, "quiet", 1002.0)
    announce(events, EventType.WORKFLOW_STARTED, "going", 1003.0)  # still running: for how long so far
    rows = {r["run_id"]: r for r in recent_runs(events, store, now=1010.0)}
    assert {k: (r["duration_ms"], r["running"]) for k, r in rows.items()} == {
        "ended": (1500.0, False),
        "quiet": (250.0, False),
        "going": (7000.0, True),
    }
    page = parsed(render_runs(list(rows.values())))
    assert page.rows["ended"][:4] == ["wf-ended", "completed", page.rows["ended"][2], "1.5 s"]
    assert page.rows["quiet"][3] == "250 ms"
    assert page.rows["going"][3] == "7.0 s so far"
    assert page.durations == {"ended": "1500", "quiet": "250", "going": "7000"}
    assert "<th>duration</th>" in render_runs([])


def test_a_run_whose_record_expired_shows_no_duration() -> None:
    events, store = MemoryEventStore(), MemoryStore()
    announce(events, EventType.WORKFLOW_STARTED, "gone", 1000.0)
    (row,) = recent_runs(events, store, now=2000.0)
    assert (row["status"], row["duration_ms"], row["running"]) == ("expired", None, False)
    assert parsed(render_runs([row])).rows["gone"][3] == ""


@pytest.mark.parametrize(
    ("ms", "shown"),
    [(None, ""), (0.4, "0 ms"), (999, "999 ms"), (1000, "1.0 s"), (59_940, "59.9 s"), (65_000, "1 min 05 s"),
     (7_380_000, "2 h 03 min")],
)  # fmt: skip
def test_durations_read_as_people_say_them(ms: float | None, shown: str) -> None:
    assert format_duration(ms) == shown


def test_a_failed_steps_error_is_shown_in_the_run_view() -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    report(conductor, recorder.sent[0], TaskStatus.FAILED)  # files "ValueError: boom"
    report(conductor, recorder.sent[1], TaskStatus.COMPLETED, 1)
    view = run_view(conductor.store, run_id)
    assert view is not None
    steps = parsed(render_run(view)).steps
    assert steps["s0"][0] == "failed" and "ValueError: boom" in steps["s0"][1]
    assert steps["s1"][0] == "completed" and "boom" not in steps["s1"][1]
    status, page = respond(MemoryEventStore(), conductor.store, f"/runs/{run_id}", {})
    assert status == 200 and "<div class='error'>ValueError: boom</div>" in page


def test_a_failed_steps_error_is_shown_while_its_block_still_runs() -> None:
    conductor, recorder, run_id = start(block("collect", 2))
    report(conductor, recorder.sent[0], TaskStatus.FAILED)
    view = run_view(conductor.store, run_id)
    assert view is not None and view["nodes"][0]["status"] == "running"
    steps = parsed(render_run(view, fragment=True)).steps
    assert steps["s0"][0] == "failed" and "ValueError: boom" in steps["s0"][1]
    assert steps["s1"][0] == "pending"
