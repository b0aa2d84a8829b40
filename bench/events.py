"""Events: throughput through emit, match, dedup and dispatch, and the latency from ``n3.emit`` to the triggered
run's first step, side by side with a plain ``apply_async`` of the same step from the emitting process.

Run from the repository root::

    python -m bench.events [--events 300] [--rounds 100]

For 1, 10 and 100 triggers (a program the worker loads, ``NAMEL3SS_CELERY_PROGRAM``), each event matches
one trigger (``filter_fields``) with a ``deduplicate_window`` on its id, and starts a one-step block whose
step records when it started. The latency is measured twice: with the worker matching each event (the
emitting process has no program), then with the emitting process matching it (it has the program, as a
web process with the same ``NAMEL3SS_CELERY_PROGRAM`` and ``NAMEL3SS_CELERY_MATCH_EVENTS=emitter``). Same Redis, same 2-process prefork worker as the
other benchmarks. Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from bench.app import mark_start, n3, probe_client
from bench.worker import BenchmarkFailed, flush_benchmark_db, start_worker, stop_worker, wait_for_worker

TIMEOUT = 60.0


def program(triggers: int) -> dict[str, object]:
    return {
        "parallel_blocks": [{"name": "started", "steps": [{"target": "mark_start"}]}],
        "event_triggers": [
            {
                "name": f"t{i}",
                "event_type": "custom",
                "trigger_target": "started",
                "filter_fields": {"kind": f"k{i}"},
                "deduplicate_window": 60,
                "context_mapping": {"probe": "data.probe"},
            }
            for i in range(triggers)
        ],
    }


def wait_for(probe: str, count: int) -> list[float]:
    client = probe_client()
    deadline = time.monotonic() + TIMEOUT
    while client.llen(probe) < count:
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"{client.llen(probe)} of {count} runs started within {TIMEOUT:g}s")
        time.sleep(0.005)
    return [float(t) for t in client.lrange(probe, 0, -1)]


def throughput(triggers: int, events: int) -> float:
    probe = f"n3bench:events:{uuid.uuid4().hex}"
    began = time.time()
    for n in range(events):
        n3.emit("custom", {"kind": f"k{n % triggers}", "probe": probe})
    starts = wait_for(probe, events)
    return events / (max(starts) - began)


def latency(rounds: int) -> tuple[list[float], list[float]]:
    emitted, plain = [], []
    for _ in range(rounds):
        probe = f"n3bench:latency:{uuid.uuid4().hex}"
        sent = time.time()
        n3.emit("custom", {"kind": "k0", "probe": probe})
        emitted.append(wait_for(probe, 1)[0] - sent)
        probe = f"n3bench:latency:{uuid.uuid4().hex}"
        sent = time.time()
        mark_start.apply_async(args=(probe,))
        plain.append(wait_for(probe, 1)[0] - sent)
    return emitted, plain


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)
    flush_benchmark_db()
    folder = Path(tempfile.mkdtemp(prefix="n3bench-events-"))
    rates: dict[int, float] = {}
    emitted: list[float] = []
    plain: list[float] = []
    emitted_here: list[float] = []
    plain_here: list[float] = []
    try:
        for triggers in (100, 10, 1):  # 1 last: then this process takes the program, for good
            path = folder / f"program-{triggers}.yaml"
            path.write_text(yaml.safe_dump(program(triggers)))
            os.environ["NAMEL3SS_CELERY_PROGRAM"] = str(path)
            worker = start_worker(folder / f"worker-{triggers}.log")
            try:
                wait_for_worker(worker)
                throughput(triggers, 20)  # warm-up: connections, imports, prefork children
                rates[triggers] = throughput(triggers, args.events)
                if triggers == 1:
                    emitted, plain = latency(args.rounds)
                    n3.events.use_program(path)  # as a web process with the same NAMEL3SS_CELERY_PROGRAM,
                    n3.events.match_here = True  # and NAMEL3SS_CELERY_MATCH_EVENTS=emitter
                    emitted_here, plain_here = latency(args.rounds)
            finally:
                stop_worker(worker)
    except BenchmarkFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(f"events through emit, match, dedup and dispatch to a started step ({args.events} events, 2-process worker)")
    for triggers, rate in sorted(rates.items()):
        print(f"  {triggers:>3} triggers: {rate:8.1f} events/s")
    print(f"latency to the first step's start, {args.rounds} rounds each, alternating with plain apply_async")
    print(f"{'':<44}{'median ms':>10}{'p99 ms':>10}{'ratio':>7}")
    for label, values, beside in (
        ("plain apply_async of the step", plain, plain),
        ("n3.emit -> run, matched on a worker", emitted, plain),
        ("plain apply_async of the step", plain_here, plain_here),
        ("n3.emit -> run, matched where emitted", emitted_here, plain_here),
    ):
        ratio = statistics.median(values) / statistics.median(beside)
        print(f"{label:<44}{statistics.median(values) * 1000:>10.2f}{p99(values) * 1000:>10.2f}{ratio:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
