"""The Namel3ss runtime API in this process: ``execute_parallel_steps`` beside a bare ``asyncio.gather``.

Run from the repository root::

    python -m bench.runtime [--rounds 5] [--sizes 1000,10000]

No server, no worker. For each size, the same cheap ``async`` steps (each returns its step) run:

- ``execute_parallel_steps``: ``namel3ss_celery.runtime.execute_parallel_steps(steps, executor,
  strategy="all", max_concurrency=100)``, as Namel3ss code calls it (this package's local executor:
  the engine's rules, its memory store, step results and statuses);
- ``asyncio.gather``: what the Namel3ss runtime itself does, ``asyncio.gather`` over the steps under an
  ``asyncio.Semaphore(100)``, returning the bare values.

Prints the median seconds of ``--rounds`` rounds (after a warm-up) and the ratio. Exit status 1 when a
block does not complete with every step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from namel3ss_celery.runtime import execute_parallel_steps

CONCURRENCY = 100


async def cheap(step: Any, context: Any = None) -> Any:
    return step


async def with_runtime(steps: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    result = await execute_parallel_steps(steps, cheap, strategy="all", max_concurrency=CONCURRENCY)
    elapsed = time.perf_counter() - started
    if result.overall_status != "completed" or result.completed_tasks != len(steps):
        raise RuntimeError(f"the block ended {result.overall_status} with {result.completed_tasks}/{len(steps)}")
    return elapsed


async def with_gather(steps: list[dict[str, Any]]) -> float:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(step: dict[str, Any]) -> Any:
        async with limit:
            return await cheap(step)

    started = time.perf_counter()
    values = await asyncio.gather(*(one(step) for step in steps))
    elapsed = time.perf_counter() - started
    if len(values) != len(steps):
        raise RuntimeError("gather lost steps")
    return elapsed


def measure(size: int, rounds: int) -> tuple[float, float]:
    steps = [{"id": i} for i in range(size)]
    asyncio.run(with_runtime(steps))  # warm-up: imports, first plan
    asyncio.run(with_gather(steps))
    runtime, gather = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine
        runtime.append(asyncio.run(with_runtime(steps)))
        gather.append(asyncio.run(with_gather(steps)))
    return statistics.median(runtime), statistics.median(gather)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args(argv)
    print(f"{'steps':>7} | {'execute_parallel_steps':>22} | {'asyncio.gather':>14} | ratio")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            runtime, gather = measure(size, args.rounds)
            print(f"{size:>7} | {runtime:>20.4f} s | {gather:>12.4f} s | {runtime / gather:.1f}x", flush=True)
    except RuntimeError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
