"""Plain Celery chord versus a namel3ss-celery ``all`` block, end to end, on one worker.

Run from the repository root::

    python -m bench.all_block [--steps 1000] [--rounds 5] [--timeout 300] [--deadline SECONDS]

It flushes the benchmark Redis database, starts one worker (prefork, 2
processes) as a subprocess (``bench/worker.py``), warms both variants up,
then alternates them for ``--rounds`` rounds and prints each round, the
medians and their ratio, and the CPU each side used. The worker is always
stopped at the end. Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from celery import canvas

from bench.app import BROKER_URL, QUEUE, RESULT_BACKEND, collect, n3, noop
from bench.worker import BenchmarkFailed, cpu_seconds, flush_benchmark_db, start_worker, stop_worker, wait_for_worker
from namel3ss_celery import ParallelExecutionResult


@dataclass(frozen=True)
class Sample:
    """One end-to-end run: seconds until the call returned and until the result arrived; CPU seconds used."""

    returned: float
    total: float
    client_cpu: float = 0.0
    worker_cpu: float = 0.0


# --- the two variants ---------------------------------------------------------


def run_plain(steps: int, timeout: float) -> Sample:
    """Hand-written Celery: ``chord(group(noop(i) for each step i), collect)``."""
    start = time.perf_counter()
    result = canvas.chord(canvas.group(noop.si(i) for i in range(steps)), collect.s()).apply_async()
    returned = time.perf_counter() - start
    count = result.get(follow_parents=False, timeout=timeout)
    total = time.perf_counter() - start
    if count != steps:
        raise BenchmarkFailed(f"plain chord collected {count!r} results, expected {steps}")
    return Sample(returned, total)


def run_namel3ss(steps: int, timeout: float, deadline: float | None = None) -> Sample:
    """namel3ss-celery: an ``all`` block of ``steps`` noop steps, each with its own ``index``; with ``deadline``,
    the block's ``timeout_seconds``."""
    spec: dict[str, Any] = {
        "name": "bench",
        "strategy": "all",
        "steps": [{"target": "noop", "index": i} for i in range(steps)],
    }
    if deadline is not None:
        spec["timeout_seconds"] = deadline
    start = time.perf_counter()
    handle = n3.dispatch(spec)
    returned = time.perf_counter() - start
    result = handle.get(timeout=timeout)
    total = time.perf_counter() - start
    if not isinstance(result, ParallelExecutionResult) or result.overall_status != "completed":
        raise BenchmarkFailed(f"namel3ss run {handle.id} did not complete: {result!r:.300}")
    if result.completed_tasks != steps:
        raise BenchmarkFailed(f"namel3ss run {handle.id} completed {result.completed_tasks} steps, expected {steps}")
    return Sample(returned, total)


def isolated(variant: Callable[[int, float], Sample], steps: int, timeout: float, worker_pid: int) -> Sample:
    """Run one variant in a new thread, then collect garbage, so no run inherits another's leftovers.

    Celery keeps one result backend per thread, with the AsyncResults that
    publishing a chord registered and their Redis pubsub subscriptions; in a
    shared thread the next ``get()`` would drain what the previous run left.
    Also counts the CPU seconds this process and the worker used meanwhile.
    """
    outcome: list[Sample | Exception] = []

    def target() -> None:
        try:
            outcome.append(variant(steps, timeout))
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            outcome.append(exc)

    client_cpu, worker_cpu = time.process_time(), cpu_seconds(worker_pid)
    thread = threading.Thread(target=target, name="bench-run", daemon=True)
    thread.start()
    thread.join(timeout + 30)
    client_cpu, worker_cpu = time.process_time() - client_cpu, cpu_seconds(worker_pid) - worker_cpu
    gc.collect()
    if not outcome:
        raise BenchmarkFailed(f"{variant.__name__} did not return within {timeout + 30:g}s")
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return replace(outcome[0], client_cpu=client_cpu, worker_cpu=worker_cpu)


# --- running and reporting ---------------------------------------------------------


def benchmark(
    steps: int, rounds: int, timeout: float, worker_pid: int, deadline: float | None = None
) -> dict[str, list[Sample]]:
    """One warm-up of each variant, then ``rounds`` rounds, plain then namel3ss."""
    run_namel3ss_block = functools.partial(run_namel3ss, deadline=deadline)
    isolated(run_plain, steps, timeout, worker_pid)
    isolated(run_namel3ss_block, steps, timeout, worker_pid)
    samples: dict[str, list[Sample]] = {"plain": [], "namel3ss": []}
    for number in range(1, rounds + 1):
        samples["plain"].append(isolated(run_plain, steps, timeout, worker_pid))
        samples["namel3ss"].append(isolated(run_namel3ss_block, steps, timeout, worker_pid))
        print(f"  round {number}/{rounds} done", flush=True)
    return samples


def report(samples: dict[str, list[Sample]]) -> None:
    """Per-round table, medians, and the ratio of the medians (end to end)."""
    plain, named = samples["plain"], samples["namel3ss"]
    print(f"\n{'round':>6} | {'plain s':>8} {'apply_async ms':>14} | {'namel3ss s':>10} {'dispatch ms':>11} | n3/plain")
    for number, (p, n) in enumerate(zip(plain, named, strict=True), start=1):
        print(table_row(str(number), p, n))
    print("-" * 70)
    p, n = median_sample(plain), median_sample(named)
    print(table_row("median", p, n))
    print(f"\nratio namel3ss/plain of the median end-to-end times: {n.total / p.total:.2f}")
    print(f"ratio namel3ss dispatch / plain apply_async (medians): {n.returned / p.returned:.3f}")
    print("\nCPU seconds per run (medians; Redis not counted), less sensitive than wall time to other load:")
    for name, m in (("plain", p), ("namel3ss", n)):
        print(f"  {name:>8}: client {m.client_cpu:.3f} + worker {m.worker_cpu:.3f} = {m.client_cpu + m.worker_cpu:.3f}")
    print(f"  ratio namel3ss/plain: {(n.client_cpu + n.worker_cpu) / (p.client_cpu + p.worker_cpu):.2f}")


def median_sample(runs: list[Sample]) -> Sample:
    return Sample(*(statistics.median(getattr(s, f.name) for s in runs) for f in fields(Sample)))


def table_row(label: str, p: Sample, n: Sample) -> str:
    return (
        f"{label:>6} | {p.total:>8.3f} {p.returned * 1000:>14.1f} | {n.total:>10.3f} {n.returned * 1000:>11.1f} "
        f"| {n.total / p.total:>8.2f}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.all_block", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps (header tasks) per run [1000]")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up [5]")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one run [300]")
    parser.add_argument(
        "--deadline", type=float, default=None, help="the namel3ss block's timeout_seconds [none: no deadline]"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.timeout <= 0:
        parser.error("--steps and --rounds must be at least 1, --timeout positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"all block of {args.steps} noop steps, {args.rounds} rounds; broker {BROKER_URL}, backend {RESULT_BACKEND}, "
        f"queue {QUEUE}, worker prefork -c 2; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    log_path = Path(tempfile.gettempdir()) / f"n3bench-worker-{os.getpid()}.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        flush_benchmark_db()
        worker = start_worker(log_path)
        wait_for_worker(worker)
        report(benchmark(args.steps, args.rounds, args.timeout, worker.pid, args.deadline))
    except Exception as exc:  # noqa: BLE001 - any failure ends the benchmark with status 1
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if log_path.exists():
            print(f"worker log: {log_path}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            stop_worker(worker)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    log_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
