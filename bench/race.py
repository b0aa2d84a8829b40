"""Race: a namel3ss-celery ``race`` block against a plain group, first-finished poll and revoke, on one worker.

Run from the repository root::

    python -m bench.race [--rounds 5] [--timeout 60]

Eight steps sleep 0.2 to 6 s (the fastest is dispatched second). For each pool
(``-P prefork -c 2``, then ``-P threads -c 2``) it starts one worker
(``bench/worker.py``) and, for each kind of step (``async``, ``check``: sync
asking ``cancelled()`` every 10 ms, ``nocheck``: one ``time.sleep``), runs the
namel3ss race (also with ``terminate_losers`` for ``nocheck`` on prefork) and
plain Celery: ``group`` of ``bench.sleep``, polled every 10 ms for the first
finished child, then ``revoke(terminate=True)`` of the others. One warm-up
round, then ``--rounds`` rounds; prints medians. Exit status 1 when a run
fails, a queued namel3ss loser starts, or a cooperative loser takes 0.5 s or
more to stop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from celery import canvas, states

from bench.app import BROKER_URL, QUEUE, app, n3, probe_client, sleep
from bench.worker import (
    WORKER_NAME,
    BenchmarkFailed,
    flush_benchmark_db,
    in_fresh_thread,
    start_worker,
    stop_worker,
    wait_for_worker,
)
from namel3ss_celery import ParallelExecutionResult, RunStatus

DURATIONS = (2.4, 0.2, 6.0, 0.9, 3.1, 1.6, 4.6, 3.9)
STEPS = {"async": "sleep_async", "check": "sleep_check", "nocheck": "sleep_nocheck"}
POOLS = ("prefork", "threads")
COOPERATIVE_LIMIT = 0.5
POLL = 0.01


@dataclass(frozen=True)
class Variant:
    """One row: a pool, a kind of step, and a side (``namel3ss``, ``namel3ss+terminate`` or ``plain``)."""

    pool: str
    kind: str
    side: str


@dataclass(frozen=True)
class Sample:
    """One race, seen from the client and from the probes the steps wrote."""

    winner: float  # the winner's sleep, seconds
    latency_ms: float  # winner's end -> the client has the result
    queued_started: int  # losers whose body started after the winner ended
    not_started: int
    stop_after: tuple[float, ...]  # each loser that ran: its end - the winner's end
    loser_seconds: float  # namel3ss: metadata["loser_worker_seconds"]; plain: measured
    measured_seconds: float  # from the probes: how long loser bodies really ran
    note: str = ""


def read_probes(tag: str, deadline: float) -> dict[int, dict[str, float]]:
    """The probes of one race, once every body that started has ended (bounded by ``deadline``)."""
    client = probe_client()
    while True:
        probes = {i: client.hgetall(f"probe:{tag}:{i}") for i in range(len(DURATIONS))}
        if all("end" in p for p in probes.values() if p):
            return {i: {k: float(v) for k, v in p.items()} for i, p in probes.items() if p}
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"race {tag}: a step body did not end in time")
        time.sleep(0.05)


def run_namel3ss(variant: Variant, timeout: float) -> Sample:
    tag = uuid.uuid4().hex
    steps = [
        {"name": f"s{i}", "target": STEPS[variant.kind], "seconds": d, "probe": f"probe:{tag}:{i}"}
        for i, d in enumerate(DURATIONS)
    ]
    spec = {"name": "race", "strategy": "race", "steps": steps, "terminate_losers": variant.side.endswith("terminate")}
    deadline = time.monotonic() + timeout
    handle = n3.dispatch(spec)
    result = handle.get(timeout=timeout)
    got = time.time()
    if not isinstance(result, ParallelExecutionResult) or result.overall_status != RunStatus.COMPLETED:
        raise BenchmarkFailed(f"namel3ss race {handle.id} did not complete: {result!r:.300}")
    winner = next(i for i, r in enumerate(result.results) if r.metadata.get("outcome") == "won")
    winner_end = result.results[winner].end_time or 0.0
    while result.metadata.get("losers_pending") or any(r.end_time is None for r in result.results):
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"namel3ss race {handle.id}: losers still pending after {timeout:g}s")
        time.sleep(0.05)
        result = n3.run(handle.id).get(timeout=timeout)
        assert isinstance(result, ParallelExecutionResult)
    probes = read_probes(tag, deadline)
    losers = [(i, r) for i, r in enumerate(result.results) if i != winner]
    ran = [r for _, r in losers if r.metadata.get("outcome") != "not_started"]
    late = {i for i, r in losers if r in ran and (r.start_time or 0.0) >= winner_end}
    late |= {i for i, p in probes.items() if i != winner and p["start"] >= winner_end}
    return Sample(
        DURATIONS[winner],
        (got - winner_end) * 1000,
        len(late),
        len(losers) - len(ran),
        tuple((r.end_time or 0.0) - winner_end for r in ran),
        float(result.metadata["loser_worker_seconds"]),
        sum(p["end"] - p["start"] for i, p in probes.items() if i != winner),
        ", ".join(sorted({str(r.metadata.get("outcome")) for r in ran})),
    )


def run_plain(variant: Variant, timeout: float) -> Sample:
    tag = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    group = canvas.group(sleep.si(d, variant.kind, f"probe:{tag}:{i}") for i, d in enumerate(DURATIONS)).apply_async()
    children = list(group.children)
    first = None
    while first is None:
        first = next((i for i, child in enumerate(children) if child.ready()), None)
        if first is None:
            if time.monotonic() > deadline:
                raise BenchmarkFailed(f"plain group {group.id}: no child finished within {timeout:g}s")
            time.sleep(POLL)
    got = time.time()
    if children[first].state != states.SUCCESS:
        raise BenchmarkFailed(f"plain group {group.id}: child {first} ended {children[first].state}")
    losers = [child.id for i, child in enumerate(children) if i != first]
    replies = app.control.revoke(
        losers, terminate=True, signal="SIGTERM", reply=True, timeout=1.0, destination=[WORKER_NAME]
    )
    errors = [answer["error"] for reply in replies or [] for answer in reply.values() if "error" in answer]
    while not all(child.ready() for child in children):
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"plain group {group.id}: losers still running after {timeout:g}s")
        time.sleep(0.05)
    probes = read_probes(tag, deadline)
    first_end = probes[first]["end"]
    ran = {i: p for i, p in probes.items() if i != first}
    measured = sum(p["end"] - p["start"] for p in ran.values())
    return Sample(
        DURATIONS[first],
        (got - first_end) * 1000,
        sum(p["start"] >= first_end for p in ran.values()),
        len(DURATIONS) - 1 - len(ran),
        tuple(p["end"] - first_end for p in ran.values()),
        measured,
        measured,
        f"revoke error: {errors[0]}" if errors else ("killed" if any("killed" in p for p in ran.values()) else ""),
    )


def variants(pool: str) -> list[Variant]:
    """namel3ss, then plain, for each kind; ``nocheck`` on prefork also with ``terminate_losers``."""
    extra = {"nocheck": ("namel3ss+terminate",)} if pool == "prefork" else {}
    return [Variant(pool, kind, side) for kind in STEPS for side in ("namel3ss", *extra.get(kind, ()), "plain")]


def benchmark(pool: str, rounds: int, timeout: float) -> dict[Variant, list[Sample]]:
    """One warm-up round, then ``rounds`` rounds of every variant of ``pool`` in turn."""
    samples: dict[Variant, list[Sample]] = {v: [] for v in variants(pool)}
    for number in range(rounds + 1):
        for variant in samples:
            runner: Callable[[Variant, float], Sample] = run_plain if variant.side == "plain" else run_namel3ss
            sample = in_fresh_thread(partial(runner, variant, timeout), timeout + 30)
            if number:
                samples[variant].append(sample)
        print(f"  {pool}: {'warm-up' if not number else f'round {number}/{rounds}'} done", flush=True)
    return samples


def report(samples: dict[Variant, list[Sample]]) -> list[str]:
    """Print the table of medians; return what broke the rules."""
    print(
        f"\n{'pool':<8} {'kind':<8} {'side':<19}|{'winner s':>9}|{'latency ms med/max':>19}|{'queued':>7}"
        f"|{'not st.':>8}|{'loser stop s med/max':>21}|{'loser s rep/meas':>17}| note"
    )
    problems: list[str] = []
    footnotes: list[str] = []
    for v, runs in samples.items():
        stops = [s for run in runs for s in run.stop_after]
        latency = [run.latency_ms for run in runs]
        stop = f"{statistics.median(stops):.3f} / {max(stops):.3f}" if stops else "-"
        winners = "/".join(sorted({f"{run.winner:g}" for run in runs}))
        seconds = (
            f"{statistics.median(r.loser_seconds for r in runs):.2f} / "
            f"{statistics.median(r.measured_seconds for r in runs):.2f}"
        )
        notes = sorted({run.note for run in runs if run.note})
        for i, note in enumerate(notes):
            if len(note) > 20:
                footnotes += [] if note in footnotes else [note]
                notes[i] = f"[{footnotes.index(note) + 1}]"
        print(
            f"{v.pool:<8} {v.kind:<8} {v.side:<19}|{winners:>9}|"
            f"{statistics.median(latency):>9.1f} / {max(latency):>7.1f}|{sum(r.queued_started for r in runs):>7}|"
            f"{statistics.median(r.not_started for r in runs):>8g}|{stop:>21}|{seconds:>17}| {', '.join(notes)}"
        )
        if v.side != "plain" and any(r.queued_started for r in runs):
            problems.append(f"{v}: a queued loser started")
        if v.side != "plain" and v.kind != "nocheck" and stops and max(stops) >= COOPERATIVE_LIMIT:
            problems.append(f"{v}: a loser stopped {max(stops):.3f}s after the winner (limit {COOPERATIVE_LIMIT}s)")
    for number, note in enumerate(footnotes, start=1):
        print(f"[{number}] {note}")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.race", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up [5]")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one race [60]")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.timeout <= 0:
        parser.error("--rounds must be at least 1, --timeout positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"race of {len(DURATIONS)} sleeps {DURATIONS} s, {args.rounds} rounds; broker {BROKER_URL}, queue {QUEUE}, "
        f"workers -c 2; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    samples: dict[Variant, list[Sample]] = {}
    logs = {pool: Path(tempfile.gettempdir()) / f"n3bench-race-{pool}-{os.getpid()}.log" for pool in POOLS}
    try:
        flush_benchmark_db()
        for pool in POOLS:
            worker: subprocess.Popen[bytes] | None = None
            try:
                worker = start_worker(logs[pool], concurrency=2, pool=pool)
                wait_for_worker(worker)
                samples.update(benchmark(pool, args.rounds, args.timeout))
            finally:
                if worker is not None:
                    stop_worker(worker)
    except Exception as exc:  # noqa: BLE001 - any failure ends the benchmark with status 1
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"worker logs: {', '.join(str(p) for p in logs.values() if p.exists())}", file=sys.stderr)
        return 1
    problems = report(samples)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    for path in logs.values():
        if problems:
            print(f"worker log: {path}", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
