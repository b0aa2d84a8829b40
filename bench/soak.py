"""Chaos soak: many mixed runs on real workers while workers die, Redis restarts and steps arrive twice.

Run from the repository root::

    python -m bench.soak [--blocks 1000] [--seconds 300] [--workers 3] [--seed 1]
                         [--delivery at_least_once|plain] [--concurrency 2]
                         [--kill-every 15] [--restart-every 45] [--duplicate-every 2] [--keep-logs]

It starts a private ``redis-server`` (a free port of 127.0.0.1, AOF fsynced on
every write) as broker, result backend and coordination store, and ``--workers``
prefork workers of ``bench.soak_steps`` on it (``--delivery at_least_once``:
each a worker of the pool ``soak``, whose task queue is ``at_least_once``;
``plain``: the app's defaults, acknowledged when a step starts). It dispatches
``--blocks`` runs (``bench.soak_specs``) at an even rate over the first
``--seconds`` less ``DRAIN`` seconds while the chaos thread (``bench.soak_chaos``)
kills workers, restarts Redis and delivers step messages twice; then the
faults stop, and it waits for every run until ``--seconds`` after the first
dispatch. It prints the figures (``bench.soak_report``, ``bench.soak_print``) and
stops everything.

Exit status 0 whatever the figures: this is a measurement, not a test (1 only when
its own Redis or workers did not start).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import redis
from kombu.exceptions import OperationalError

from bench.soak_chaos import Chaos
from bench.soak_cluster import Cluster, ClusterError
from bench.soak_print import print_report
from bench.soak_report import Ended, Report, stuck_records
from bench.soak_specs import MAX_BUDGET, SoakRun, make_runs, soak_pool
from bench.soak_steps import QUEUE, make_app
from namel3ss_celery import Namel3ssCelery, Namel3ssCeleryError, RunHandle, UnknownRun, WaitTimeout
from namel3ss_celery.errors import StoreUnavailable

DRAIN = MAX_BUDGET + 20.0  # seconds between the last dispatch and the final deadline
PUBLISH_PATIENCE = 30.0  # seconds a run's dispatch keeps trying while Redis is down
PUBLISH_ERRORS = (Namel3ssCeleryError, redis.RedisError, OperationalError, OSError)
WAIT_ERRORS = (StoreUnavailable, redis.RedisError)


@dataclass
class Dispatched:
    """A run as dispatched: its handle (``None`` when every try failed) and the tries that raised."""

    run: SoakRun
    handle: RunHandle | None
    at: float  # epoch seconds when the dispatch began
    failed_tries: list[tuple[str, str]] = field(default_factory=list)  # (run id, error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000, help="runs to dispatch (default 1000)")
    parser.add_argument("--seconds", type=float, default=300.0, help="from the first dispatch to the end (300)")
    parser.add_argument("--workers", type=int, default=3, help="celery workers kept running (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the runs and the fault schedule (default 1)")
    parser.add_argument("--delivery", choices=["at_least_once", "plain"], default="at_least_once")
    parser.add_argument("--kill-every", type=float, default=15.0, help="mean seconds between worker kills (0: none)")
    parser.add_argument("--restart-every", type=float, default=45.0, help="mean seconds between Redis restarts")
    parser.add_argument("--duplicate-every", type=float, default=2.0, help="mean seconds between duplicates")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the worker logs (kept anyway when a run is stuck)"
    )
    return parser.parse_args(argv)


def dispatch_window(seconds: float) -> float:
    """Seconds over which the runs are dispatched: all but ``DRAIN``, and at least a quarter."""
    return max(seconds - DRAIN, seconds * 0.25)


def dispatch_one(n3: Namel3ssCelery, run: SoakRun) -> Dispatched:
    """Publish ``run`` (``dispatch`` in two halves, to know the id of a try that raised); retry while Redis is down.

    Each try gets a new run id: a try that raised may have written its record, which
    the report looks up at the end.
    """
    plan = n3.plan(run.spec)  # no I/O; a bad spec is a bug of the soak and raises here
    began = time.time()
    failed: list[tuple[str, str]] = []
    give_up = time.monotonic() + PUBLISH_PATIENCE
    while True:
        run_id = uuid.uuid4().hex
        try:
            handle = n3.publish(plan, {"seq": run.seq}, run_id=run_id)
            return Dispatched(run, handle, began, failed)
        except PUBLISH_ERRORS as exc:
            failed.append((run_id, f"{type(exc).__name__}: {exc}"[:200]))
            if time.monotonic() > give_up:
                return Dispatched(run, None, began, failed)
            time.sleep(0.25)


def dispatch_all(n3: Namel3ssCelery, runs: list[SoakRun], window: float) -> list[Dispatched]:
    """Dispatch every run, run ``i`` not before ``i * window / len(runs)`` seconds from now."""
    start = time.monotonic()
    interval = window / max(len(runs), 1)
    dispatched = []
    for index, run in enumerate(runs):
        pause = start + index * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        dispatched.append(dispatch_one(n3, run))
    return dispatched


def wait_for_end(dispatched: Dispatched, deadline: float) -> Ended:
    """The run's result, waiting until ``deadline`` (monotonic); ``stuck`` if it is still running then."""
    handle = dispatched.handle
    if handle is None:
        return Ended(dispatched.run, None, dispatched.at, "not dispatched", None)
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0 and not handle.status().final:
                return Ended(dispatched.run, handle.id, dispatched.at, "stuck", None)
            result = handle.get(timeout=max(left, 1.0))
            return Ended(dispatched.run, handle.id, dispatched.at, str(result.overall_status), result)
        except WaitTimeout:
            continue  # the deadline passed meanwhile: the status decides above
        except UnknownRun:
            return Ended(dispatched.run, handle.id, dispatched.at, "unknown (record gone)", None)
        except WAIT_ERRORS:
            time.sleep(0.5)  # Redis is restarting


def failed_tries(n3: Namel3ssCelery, dispatched: list[Dispatched]) -> dict[str, tuple[str, str]]:
    """Each dispatch try that raised: its error, and its record's status now (or ``no record``)."""
    states = {}
    for item in dispatched:
        for run_id, error in item.failed_tries:
            record = n3.store.run_record(run_id)
            states[run_id] = (error, "no record" if record is None else record.get("status", "?"))
    return states


def pool_program(cluster: Cluster, pool: dict[str, object]) -> None:
    """Write the pool's program for the workers, and make them pool workers of it (``--n3-pool soak``)."""
    path = cluster.root / "program.json"
    path.write_text(json.dumps({"worker_pools": [pool["worker_pool"]], "task_queues": [pool["task_queue"]]}))
    cluster.worker_env["NAMEL3SS_CELERY_PROGRAM"] = str(path)
    cluster.worker_args.extend(["--n3-pool", "soak"])


def soak(args: argparse.Namespace, cluster: Cluster, n3: Namel3ssCelery) -> Report:
    """Start the cluster, dispatch under chaos, wait, and gather what the report prints."""
    pool = soak_pool(QUEUE, args.concurrency) if args.delivery == "at_least_once" else None
    if pool is not None:
        pool_program(cluster, pool)
    runs = make_runs(args.blocks, args.seed, pool)
    cluster.start(lambda names: n3.app.control.ping(destination=names, timeout=1.0))
    window = dispatch_window(args.seconds)
    every = {"kill": args.kill_every, "restart": args.restart_every, "duplicate": args.duplicate_every}
    chaos = Chaos(cluster, QUEUE, args.seed, every)
    first, started_at = time.monotonic(), time.time()
    chaos.start()
    try:
        dispatched = dispatch_all(n3, runs, window)
    finally:
        chaos.stop()
        chaos.join()
    ended = [wait_for_end(item, first + args.seconds) for item in dispatched]
    client = cluster.redis.client()
    try:
        stuck = stuck_records(client, ended)
        tries = failed_tries(n3, dispatched)
        cluster.stop_workers()  # before the key scan: nothing writes any more
        report = Report.gather(client, QUEUE, ended, chaos, tries, stuck)
        report.error_lines = cluster.error_lines()
        report.exits = list(cluster.exits)
    finally:
        client.close()
    report.window, report.started_at = window, started_at
    return report


def log_to_file(path: Path) -> None:
    """This process's warnings and errors (namel3ss-celery's, kombu's) to ``path``, in Celery's format."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as ``SystemExit``, so the ``finally`` and ``atexit`` clean-ups stop the cluster."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; 0 whatever they are, 1 when its own cluster did not start."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    cluster = Cluster(args.workers, args.concurrency, [], {})
    log_to_file(cluster.logs / "dispatcher.log")
    n3 = Namel3ssCelery(make_app(cluster.redis.url))
    try:
        report = soak(args, cluster, n3)
        cluster.keep_logs = args.keep_logs or report.stuck_count > 0
        print_report(args, report, cluster.logs)
    except ClusterError as exc:
        cluster.keep_logs = True
        print(f"the soak's cluster did not start: {exc} (logs in {cluster.logs})", file=sys.stderr)
        return 1
    finally:
        n3.close()
        n3.app.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
