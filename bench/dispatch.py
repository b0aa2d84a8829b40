"""How long the call that starts a large block takes to return: namel3ss ``dispatch`` against a plain chord's
``apply_async``, on the same Redis.

Run from the repository root::

    python -m bench.dispatch [--steps 5000] [--rounds 40] [--plain-rounds 3] [--heap 0]

This is what a web request that starts the block waits for. No worker runs:
the end-to-end time of the same block is ``bench.all_block``'s job, and here
nothing else competes for the two cores. Each namel3ss call checks the whole
spec (every step's fields, targets and payload) and stores the plan, then
publishes one launch message; the plain call publishes every step. Each step
carries its own payload (``{"target": "noop", "index": i}``; plain:
``noop.si(i)``), as a real block's steps do.

``--heap N`` keeps N extra small objects alive in this process first, as a web
application's process holds many more objects than this script: Python's
garbage collector walks all of them in a full collection, so its pauses grow
with the heap.

The benchmark's Redis database is flushed before and after. Exit status 1 when
a call fails.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any

from celery import canvas

from bench.app import BROKER_URL, QUEUE, collect, n3, noop
from bench.worker import BenchmarkFailed, flush_benchmark_db, in_fresh_thread

PLAIN_TIMEOUT = 300.0


def spec(steps: int) -> dict[str, Any]:
    return {"name": "bench", "strategy": "all", "steps": [{"target": "noop", "index": i} for i in range(steps)]}


def time_dispatch(steps: int) -> float:
    """Milliseconds for ``n3.dispatch`` to return (building the spec dict is not counted)."""
    block = spec(steps)
    start = time.perf_counter()
    n3.dispatch(block)
    return (time.perf_counter() - start) * 1000


def time_plain(steps: int) -> float:
    """Milliseconds for ``chord(group(noop.si(i) ...), collect.s()).apply_async()`` to return."""

    def publish() -> float:
        start = time.perf_counter()
        canvas.chord(canvas.group(noop.si(i) for i in range(steps)), collect.s()).apply_async()
        return (time.perf_counter() - start) * 1000

    return in_fresh_thread(publish, PLAIN_TIMEOUT)  # Celery keeps a result backend (and its subscriptions) per thread


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps in the block [5000]")
    parser.add_argument("--rounds", type=int, default=40, help="namel3ss dispatch calls measured [40]")
    parser.add_argument("--plain-rounds", type=int, default=3, help="plain apply_async calls measured [3]")
    parser.add_argument("--heap", type=int, default=0, help="extra objects kept alive in this process [0]")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.plain_rounds < 1 or args.heap < 0:
        parser.error("--steps, --rounds and --plain-rounds must be at least 1, --heap at least 0")

    ballast = [[i] for i in range(args.heap)]  # noqa: F841 - kept alive on purpose (see --heap)
    print(
        f"dispatch of a {args.steps}-step all block; broker {BROKER_URL}, queue {QUEUE}, no worker; "
        f"{len(gc.get_objects())} objects tracked by the garbage collector; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        flush_benchmark_db()
        time_dispatch(args.steps)  # warm-up: connections, imports, caches
        time_plain(min(args.steps, 100))
        named = [time_dispatch(args.steps) for _ in range(args.rounds)]
        plain = [time_plain(args.steps) for _ in range(args.plain_rounds)]
    except Exception as exc:  # noqa: BLE001 - any failure ends the benchmark with status 1
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            flush_benchmark_db()  # the launch and step messages no worker took
        except BenchmarkFailed as exc:
            print(f"could not flush the benchmark database: {exc}", file=sys.stderr)

    print(f"\n{'':<34}{'calls':>6}{'median ms':>11}{'p90 ms':>9}{'max ms':>9}")
    for label, values in (
        ("namel3ss dispatch", named),
        ("plain chord apply_async", plain),
    ):
        print(
            f"{label:<34}{len(values):>6}{statistics.median(values):>11.1f}"
            f"{percentile(values, 0.9):>9.1f}{max(values):>9.1f}"
        )
    print(f"\nnamel3ss calls over 50 ms: {sum(v > 50 for v in named)} of {len(named)}")
    print(f"ratio of medians (namel3ss / plain): {statistics.median(named) / statistics.median(plain):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
