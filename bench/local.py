"""The local executor's times for the cases its unit tests check by behaviour (tests/unit/test_local.py).

Run from the repository root::

    python -m bench.local [--rounds 5]

No server, no worker: ``LocalExecutor`` runs each plan in this process (sync
steps in its threads, ``async def`` steps on its event loop). The unit tests
prove that steps run at the same time (they meet) and that losers stop (they
say so); this prints how long it took, beside the sequential time, the ideal
and the wall-clock bound the unit tests used to assert:

- ``6 steps at once``: an ``all`` block of 3 sync and 3 async steps of 0.3 s;
- ``2 nodes at once``: two independent nodes of 0.4 s (one sync, one async), then a third;
- ``3 runs, one loop``: three such 6-step runs gathered on one event loop;
- ``race``, ``fail_fast``, ``deadline``: a block decided after 0.1 s, at once, or by its
  0.3 s ``timeout_seconds``, beside 30 s losers (a sync one that checks ``cancelled()``
  every 10 ms, and an async one); ``loser stop ms`` is how long after the result the sync
  loser had stopped (race and deadline; under fail_fast it is decided before its thread begins);
- ``failed node``: a node fails at once while an independent one sleeps 30 s.

Exit status 1 when a run ends otherwise than expected, or a loser does not stop within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from namel3ss_celery import StepCancelled, cancelled
from namel3ss_celery.compiler.planning import make_plan
from namel3ss_celery.local import LocalExecutor
from namel3ss_celery.registry import Registry
from namel3ss_celery.spec import load_any

LOSER = 30.0  # seconds a loser would run if nothing stopped it
STOP_WAIT = 5.0  # seconds a loser is given to stop after the result

_stopped: dict[str, float] = {}  # step name -> time.monotonic() when it stopped
_stopped_lock = threading.Lock()


def sync_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    time.sleep(float(step.get("seconds", 0)))
    return str(step["name"])


async def async_sleep(step: dict[str, Any], context: dict[str, Any]) -> str:
    await asyncio.sleep(float(step.get("seconds", 0)))
    return str(step["name"])


def patient(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Sleeps in 10 ms slices, stopping when asked; records when it stopped."""
    deadline = time.monotonic() + float(step["seconds"])
    while time.monotonic() < deadline:
        if cancelled():
            with _stopped_lock:
                _stopped[step["name"]] = time.monotonic()
            raise StepCancelled("asked to stop")
        time.sleep(0.01)
    return str(step["name"])


def fail(step: dict[str, Any], context: dict[str, Any]) -> None:
    raise ValueError("on purpose")


def outputs(step: dict[str, Any], context: dict[str, Any]) -> Any:
    return context["outputs"]


def six(prefix: str) -> list[dict[str, Any]]:
    targets = ["sync_sleep"] * 3 + ["async_sleep"] * 3
    return [{"name": f"{prefix}{i}", "target": t, "seconds": 0.3} for i, t in enumerate(targets)]


def losers(name: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "target": "patient", "seconds": LOSER},
        {"name": f"{name}-async", "target": "async_sleep", "seconds": LOSER},
    ]


@dataclass(frozen=True)
class Case:
    """One plan, the status its run must end with, and what to compare its time with."""

    label: str
    spec: dict[str, Any]
    status: str
    ideal: float  # seconds
    sequential: float | None  # seconds, were the steps run one after another
    bound: float  # the unit tests' former bound, seconds
    runs: int = 1  # copies of the plan gathered on one event loop
    loser: str | None = None  # the sync loser whose stop is timed


def cases(round_: int) -> list[Case]:
    tag = f"r{round_}"  # names per round: a loser of one round never answers for the next
    return [
        Case("6 steps at once", {"name": "b", "steps": six("s")}, "completed", 0.3, 1.8, 1.0),
        Case(
            "2 nodes at once",
            {
                "parallel_blocks": [
                    {"name": "a", "steps": [{"name": "a", "target": "async_sleep", "seconds": 0.4}]},
                    {"name": "b", "steps": [{"name": "b", "target": "sync_sleep", "seconds": 0.4}]},
                    {"name": "c", "depends_on": ["a", "b"], "steps": [{"name": "seen", "target": "outputs"}]},
                ]
            },
            "completed",
            0.4,
            0.8,
            0.75,
        ),
        Case("3 runs, one loop", {"name": "b", "steps": six("r")}, "completed", 0.3, 5.4, 1.5, runs=3),
        Case(
            "race",
            {
                "name": "b",
                "strategy": "race",
                "steps": [*losers(f"race-{tag}"), {"name": "fast", "target": "async_sleep", "seconds": 0.1}],
            },
            "completed",
            0.1,
            None,
            5.0,
            loser=f"race-{tag}",
        ),
        Case(
            "fail_fast",
            {"name": "b", "steps": [{"name": "bad", "target": "fail"}, *losers(f"ff-{tag}")]},
            "failed",
            0.0,
            None,
            5.0,  # its sync loser is decided before its thread may even begin: not timed
        ),
        Case(
            "deadline",
            {
                "name": "b",
                "strategy": "collect",
                "timeout_seconds": 0.3,
                "steps": [{"name": "quick", "target": "sync_sleep"}, *losers(f"dl-{tag}")],
            },
            "timeout",
            0.3,
            None,
            5.0,
            loser=f"dl-{tag}",
        ),
        Case(
            "failed node",
            {
                "parallel_blocks": [
                    {"name": "bad", "steps": [{"name": "x", "target": "fail"}]},
                    {"name": "slow", "steps": [{"name": "slow", "target": "async_sleep", "seconds": LOSER}]},
                ]
            },
            "failed",
            0.0,
            None,
            5.0,
        ),
    ]


def executor() -> LocalExecutor:
    registry = Registry()
    for function in (sync_sleep, async_sleep, patient, fail, outputs):
        registry.add_step(function.__name__, function)
    return LocalExecutor(registry)


def measure(local: LocalExecutor, case: Case) -> tuple[float, float | None]:
    """Seconds until the run(s) returned, and milliseconds from then until the sync loser stopped.

    Raises:
        RuntimeError: a run ended with another status, or the loser did not stop within ``STOP_WAIT``.
    """
    plan = make_plan(load_any(case.spec))

    async def gathered() -> list[Any]:
        return await asyncio.gather(*(local.run(plan) for _ in range(case.runs)))

    start = time.monotonic()
    results = asyncio.run(gathered())
    returned = time.monotonic()
    statuses = [str(r.overall_status) for r in results]
    if statuses != [case.status] * case.runs:
        raise RuntimeError(f"{case.label}: ended {statuses}, not {case.status}: {results[0].error_message}")
    if case.loser is None:
        return returned - start, None
    stopped = wait_for(lambda: _stopped.get(str(case.loser)), STOP_WAIT)
    if stopped is None:
        raise RuntimeError(f"{case.label}: the loser {case.loser} did not stop within {STOP_WAIT:g}s")
    return returned - start, max(0.0, stopped - returned) * 1000


def wait_for(value: Callable[[], float | None], seconds: float) -> float | None:
    deadline = time.monotonic() + seconds
    while (found := value()) is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each case measured, after one warm-up [5]")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    print(f"local executor, {args.rounds} rounds per case; load average {os.getloadavg()[0]:.2f}", flush=True)
    local = executor()
    times: dict[str, list[float]] = {}
    stops: dict[str, list[float]] = {}
    try:
        for round_ in range(args.rounds + 1):  # round 0 warms up: imports, thread pools, the event loop policy
            for case in cases(round_):
                took, stop_ms = measure(local, case)
                if round_:
                    times.setdefault(case.label, []).append(took)
                    if stop_ms is not None:
                        stops.setdefault(case.label, []).append(stop_ms)
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1

    print(
        f"\n{'case':<18}{'median s':>10}{'max s':>8}{'ideal s':>9}{'one by one s':>14}"
        f"{'old bound s':>13}{'loser stop ms':>15}"
    )
    for case in cases(0):
        values = times[case.label]
        sequential = f"{case.sequential:.1f}" if case.sequential is not None else "-"
        stop = f"{statistics.median(stops[case.label]):.1f}" if case.label in stops else "-"
        print(
            f"{case.label:<18}{statistics.median(values):>10.3f}{max(values):>8.3f}{case.ideal:>9.1f}"
            f"{sequential:>14}{case.bound:>13.2f}{stop:>15}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
