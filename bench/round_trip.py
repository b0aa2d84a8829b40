"""One-step round trip: ``noop.apply_async().get()`` against a one-step namel3ss-celery block.

Run from the repository root::

    python -m bench.round_trip [--rounds 200]

Same Redis, same 2-process prefork worker, alternating the two calls after a
warm-up; prints the median and 90th percentile of each and the ratio of medians.
Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.app import n3, noop
from bench.worker import BenchmarkFailed, flush_benchmark_db, start_worker, stop_worker, wait_for_worker

TIMEOUT = 10.0
BLOCK = {"name": "one", "steps": [{"target": "noop"}]}


def plain() -> float:
    start = time.perf_counter()
    noop.apply_async().get(timeout=TIMEOUT)
    return time.perf_counter() - start


def namel3ss() -> float:
    start = time.perf_counter()
    result = n3.dispatch(BLOCK).get(timeout=TIMEOUT)
    elapsed = time.perf_counter() - start
    if result.overall_status != "completed":
        raise BenchmarkFailed(f"a one-step block ended {result.overall_status}")
    return elapsed


def p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    flush_benchmark_db()
    worker = start_worker(Path(tempfile.mkdtemp(prefix="n3bench-")) / "worker.log")
    try:
        wait_for_worker(worker)
        for _ in range(20):  # warm-up: connections, imports, prefork children
            plain()
            namel3ss()
        times: dict[str, list[float]] = {"plain": [], "namel3ss": []}
        for _ in range(args.rounds):
            times["plain"].append(plain())
            times["namel3ss"].append(namel3ss())
    except BenchmarkFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_worker(worker)
    print(f"one-step round trip, {args.rounds} rounds each, alternating")
    print(f"{'':<28}{'median ms':>10}{'p90 ms':>10}")
    for label, values in (
        ("plain apply_async().get()", times["plain"]),
        ("namel3ss dispatch().get()", times["namel3ss"]),
    ):
        print(f"{label:<28}{statistics.median(values) * 1000:>10.2f}{p90(values) * 1000:>10.2f}")
    ratio = statistics.median(times["namel3ss"]) / statistics.median(times["plain"])
    print(f"ratio of medians (namel3ss / plain): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
