"""The embedded default (in-process worker, memory transport): a 1000-step block, and plain Celery beside it.

Run from the repository root::

    python -m bench.embedded [--steps 1000] [--rounds 3]

No server. namel3ss-celery's embedded app (``Namel3ssCelery()`` with no broker) runs
an ``all`` block of no-op steps; plain Celery runs ``group(noop.si() ...)`` joined
with ``GroupResult.get()`` on a Celery app over the same transport and backend
(``memory://``, ``cache+memory://``) and the same in-process worker, once with
kombu's default polling (1 s per empty poll) and once with the embedded default's.
Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from celery import Celery, canvas

from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.worker.embedded import EmbeddedWorker


def plain_app(polling_interval: float | None) -> Celery:
    app = Celery("plain-embedded", broker="memory://", backend="cache+memory://", set_as_current=False)
    if polling_interval is not None:
        app.conf.broker_transport_options = {"polling_interval": polling_interval}

    @app.task(name="plain.noop", shared=False)
    def noop() -> None:
        return None

    return app


def run_plain(app: Celery, steps: int, timeout: float) -> float:
    noop = app.tasks["plain.noop"]
    start = time.perf_counter()
    results = canvas.group(noop.si() for _ in range(steps)).apply_async()
    results.get(timeout=timeout, interval=0.005)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    n3 = Namel3ssCelery(settings=Settings())

    @n3.step("noop")
    def noop(step: dict[str, object], context: dict[str, object]) -> None:
        return None

    block = {"name": "embedded", "steps": [{"target": "noop"}] * args.steps}
    ours = []
    try:
        n3.dispatch({"name": "warm", "steps": [{"target": "noop"}] * 10}).get(timeout=30)
        for _ in range(args.rounds):
            start = time.perf_counter()
            result = n3.dispatch(block).get(timeout=120)
            ours.append(time.perf_counter() - start)
            if result.completed_tasks != args.steps:
                print(f"benchmark failed: {result.completed_tasks} of {args.steps} steps completed", file=sys.stderr)
                return 1
    finally:
        n3.close()
    print(f"{args.steps} no-op steps in this process, {args.rounds} rounds")
    print(
        f"namel3ss-celery embedded default: median {statistics.median(ours):.2f} s  ({', '.join(f'{t:.2f}' for t in ours)})"
    )

    for label, polling in (("plain Celery, tuned polling (0.005 s)", 0.005), ("plain Celery, default polling", None)):
        app = plain_app(polling)
        worker = EmbeddedWorker(app)
        try:
            worker.start()
            try:
                took = run_plain(app, args.steps, args.plain_timeout)
                print(f"{label}: {took:.2f} s")
            except Exception as exc:  # noqa: BLE001 - a timeout is the figure here
                print(f"{label}: did not finish in {args.plain_timeout:g} s ({type(exc).__name__})")
        finally:
            worker.stop()
            app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
