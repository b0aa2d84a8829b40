"""The benchmark worker: flush its Redis database, start it as a subprocess, wait for it, stop it.

Shared by the benchmark scripts, so every comparison runs on the same kind of
worker: ``celery -A bench.app worker -P prefork -c 2 -Q <N3BENCH_QUEUE>`` by
default (``race`` also starts ``-P threads``, ``max_concurrency`` ``-c 4``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import redis

from bench.app import BROKER_URL, QUEUE, RESULT_BACKEND, app

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_NAME = f"bench@{socket.gethostname()}"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

T = TypeVar("T")


class BenchmarkFailed(Exception):
    """A run returned the wrong thing, or the worker did not start."""


def flush_benchmark_db() -> None:
    """Empty the Redis database(s) of the benchmark's broker and backend; refuse database 0."""
    for url in sorted({BROKER_URL, RESULT_BACKEND}):
        if not url.startswith("redis://"):
            continue
        if urlparse(url).path.strip("/") in ("", "0"):
            raise BenchmarkFailed(f"refusing to flush Redis database 0 ({url}); give the benchmark its own database")
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()


def start_worker(log_path: Path, concurrency: int = 2, pool: str = "prefork") -> subprocess.Popen[bytes]:
    """``celery -A bench.app worker -P <pool> -c <concurrency>`` in its own process group, logging to ``log_path``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.app",
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        QUEUE,
        "-n",
        "bench@%h",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "WARNING",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_worker(worker: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    """Return once the worker answers ``ping``; raise if it exits or stays silent for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise BenchmarkFailed(f"the worker exited with status {worker.returncode} before answering ping")
        if app.control.ping(destination=[WORKER_NAME], timeout=1.0):
            return
    raise BenchmarkFailed(f"the worker {WORKER_NAME} did not answer ping within {timeout:g}s")


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL to its whole process group if it lingers."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its child processes; 0.0 without Linux ``/proc``."""
    proc = Path("/proc")
    children = proc / str(pid) / "task" / str(pid) / "children"
    if not children.exists():
        return 0.0
    total = 0
    for process in [str(pid), *children.read_text().split()]:
        try:
            stat = (proc / process / "stat").read_text()
        except FileNotFoundError:  # a pool process that just exited
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def in_fresh_thread(work: Callable[[], T], timeout: float) -> T:
    """``work()`` in a new thread (Celery keeps one result backend, and its subscriptions, per thread).

    Raises:
        BenchmarkFailed: it did not return within ``timeout`` seconds.
    """
    outcome: list[T | Exception] = []

    def target() -> None:
        try:
            outcome.append(work())
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=target, name="bench-run", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise BenchmarkFailed(f"a run did not return within {timeout:g}s")
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]
