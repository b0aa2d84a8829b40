"""``max_concurrency = 2``: a namel3ss-celery block against two plain chains, on a ``-P prefork -c 4`` worker.

Run from the repository root::

    python -m bench.max_concurrency [--steps 40] [--rounds 3] [--seed 7] [--timeout 120]

The steps sleep fixed pseudo-random durations (seeded, 0.05 to 0.6 s) and
count, in Redis, how many of their block run at once (``bench.app.counted``).
namel3ss-celery runs them as one ``all`` block with ``max_concurrency: 2``;
plain Celery's nearest equivalent splits them into 2 ``chain``s (step i goes
to chain i % 2) run as a group. Both are compared with the ideal: greedy list
scheduling of the durations, in dispatch order, on 2 slots. One warm-up, then
``--rounds`` rounds; exit status 1 when a run fails, the peak passes 2, or the
namel3ss median ratio total/ideal passes 1.15.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
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

from celery import canvas

from bench.app import BROKER_URL, QUEUE, n3, probe_client, tracked_sleep
from bench.worker import (
    BenchmarkFailed,
    flush_benchmark_db,
    in_fresh_thread,
    start_worker,
    stop_worker,
    wait_for_worker,
)
from namel3ss_celery import ParallelExecutionResult, RunStatus

WINDOW = 2
WORKER_PROCESSES = 4
TARGET_RATIO = 1.15


@dataclass(frozen=True)
class Sample:
    """One run: seconds from dispatch to result, the peak the steps counted, what the result reported."""

    total: float
    peak: int
    reported_peak: int | None = None
    span: float | None = None  # first step start -> last step end, from the result


def seeded_durations(steps: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.05, 0.6), 3) for _ in range(steps)]


def greedy_makespan(durations: list[float], slots: int) -> float:
    """List scheduling in order: each duration goes to the slot that frees first; the last end."""
    free = [0.0] * slots
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def peak_of(counter: str) -> int:
    client = probe_client()
    peak, running = client.mget(f"{counter}:peak", counter)
    if int(running or 0) != 0:
        raise BenchmarkFailed(f"counter {counter} is {running} after the run ended")
    return int(peak or 0)


def run_namel3ss(durations: list[float], timeout: float) -> Sample:
    counter = f"conc:{uuid.uuid4().hex}"
    steps = [
        {"name": f"s{i}", "target": "tracked_sleep", "seconds": d, "counter": counter} for i, d in enumerate(durations)
    ]
    spec = {"name": "window", "strategy": "all", "max_concurrency": WINDOW, "steps": steps}
    start = time.perf_counter()
    handle = n3.dispatch(spec)
    result = handle.get(timeout=timeout)
    total = time.perf_counter() - start
    if not isinstance(result, ParallelExecutionResult) or result.overall_status != RunStatus.COMPLETED:
        raise BenchmarkFailed(f"namel3ss run {handle.id} did not complete: {result!r:.300}")
    if result.completed_tasks != len(durations):
        raise BenchmarkFailed(f"namel3ss run {handle.id} completed {result.completed_tasks} of {len(durations)} steps")
    span = (result.total_duration_ms or 0.0) / 1000
    return Sample(total, peak_of(counter), result.actual_max_concurrent, span)


def run_plain(durations: list[float], timeout: float) -> Sample:
    counter = f"conc:{uuid.uuid4().hex}"
    chains = [canvas.chain(tracked_sleep.si(d, counter) for d in durations[lane::WINDOW]) for lane in range(WINDOW)]
    start = time.perf_counter()
    values = canvas.group(chains).apply_async().get(timeout=timeout)
    total = time.perf_counter() - start
    if len(values) != WINDOW:
        raise BenchmarkFailed(f"plain group of chains returned {values!r}")
    return Sample(total, peak_of(counter))


def benchmark(durations: list[float], rounds: int, timeout: float) -> dict[str, list[Sample]]:
    """One warm-up of each side, then ``rounds`` rounds, plain then namel3ss."""
    sides: dict[str, Callable[[list[float], float], Sample]] = {"plain": run_plain, "namel3ss": run_namel3ss}
    samples: dict[str, list[Sample]] = {name: [] for name in sides}
    for number in range(rounds + 1):
        for name, side in sides.items():
            sample = in_fresh_thread(partial(side, durations, timeout), timeout + 30)
            if number:
                samples[name].append(sample)
        print(f"  {'warm-up' if not number else f'round {number}/{rounds}'} done", flush=True)
    return samples


def report(durations: list[float], samples: dict[str, list[Sample]]) -> list[str]:
    """Per-round table and medians; return what broke the rules."""
    ideal = greedy_makespan(durations, WINDOW)
    lanes = max(sum(durations[lane::WINDOW]) for lane in range(WINDOW))
    plain, named = samples["plain"], samples["namel3ss"]
    print(
        f"\n{len(durations)} steps, {sum(durations):.3f} s of sleep; ideal greedy schedule on {WINDOW} slots: "
        f"{ideal:.3f} s; the 2 static chains' own ideal (longest chain): {lanes:.3f} s"
    )
    print(
        f"\n{'round':>6} | {'plain 2 chains s':>16} {'peak':>4} {'/ideal':>6} | {'namel3ss s':>10} {'span s':>7} "
        f"{'peak':>4} {'reported':>8} {'/ideal':>6}"
    )
    for number, (p, n) in enumerate(zip(plain, named, strict=True), start=1):
        print(
            f"{number:>6} | {p.total:>16.3f} {p.peak:>4} {p.total / ideal:>6.3f} | {n.total:>10.3f} "
            f"{n.span or 0.0:>7.3f} {n.peak:>4} {n.reported_peak!s:>8} {n.total / ideal:>6.3f}"
        )
    p_total, n_total = statistics.median(s.total for s in plain), statistics.median(s.total for s in named)
    n_span = statistics.median(s.span or 0.0 for s in named)
    p_peak, n_peak = max(s.peak for s in plain), max(s.peak for s in named)
    print("-" * 86)
    print(
        f"{'median':>6} | {p_total:>16.3f} {p_peak:>4} {p_total / ideal:>6.3f} | {n_total:>10.3f} {n_span:>7.3f} "
        f"{n_peak:>4} {max(s.reported_peak or 0 for s in named):>8} {n_total / ideal:>6.3f}"
    )
    print(
        f"\n(peak columns: the highest of any round.) namel3ss total/ideal {n_total / ideal:.3f} (target <= "
        f"{TARGET_RATIO}); plain 2 chains total/ideal {p_total / ideal:.3f}; namel3ss/plain {n_total / p_total:.3f}"
    )
    problems = [
        f"{name}: {s.peak} steps ran at once (max_concurrency {WINDOW})"
        for name, runs in samples.items()
        for s in runs
        if s.peak > WINDOW
    ]
    if n_total / ideal > TARGET_RATIO:
        problems.append(f"namel3ss total/ideal {n_total / ideal:.3f} is above the target {TARGET_RATIO}")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.max_concurrency", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps of the block [40]")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after the warm-up [3]")
    parser.add_argument("--seed", type=int, default=7, help="seed of the durations [7]")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one run [120]")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.timeout <= 0:
        parser.error("--steps and --rounds must be at least 1, --timeout positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    durations = seeded_durations(args.steps, args.seed)
    print(
        f"max_concurrency {WINDOW}, {args.steps} steps (seed {args.seed}), {args.rounds} rounds; broker {BROKER_URL}, "
        f"queue {QUEUE}, worker prefork -c {WORKER_PROCESSES}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    log_path = Path(tempfile.gettempdir()) / f"n3bench-window-{os.getpid()}.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        flush_benchmark_db()
        worker = start_worker(log_path, concurrency=WORKER_PROCESSES)
        wait_for_worker(worker)
        samples = benchmark(durations, args.rounds, args.timeout)
    except Exception as exc:  # noqa: BLE001 - any failure ends the benchmark with status 1
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"worker log: {log_path}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            stop_worker(worker)
    problems = report(durations, samples)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        print(f"worker log: {log_path}", file=sys.stderr)
    else:
        log_path.unlink(missing_ok=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
