"""The soak's own cluster: a private ``redis-server`` with AOF, and ``celery worker`` processes on it.

Nothing here touches the shared Redis on 6379 or RabbitMQ. Every process is
started in its own session, so a worker is killed with its pool children by
killing its process group; ``Cluster.close`` (also registered with ``atexit``)
stops all of them and removes the Redis directory, whatever happened.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tests.private_redis import PrivateRedis, ServerDidNotStart

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
RESTART_SEC = 5.0  # a worker that exits on its own is started again after this, as namel3ss-celery's systemd units do


class ClusterError(Exception):
    """A process of the soak's cluster did not start or answer in time."""


@dataclass(frozen=True)
class Exit:
    """A worker that exited on its own (not killed by the soak): its name, when it was seen gone, its status."""

    name: str
    at: float  # epoch seconds
    code: int | None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check()`` every 50 ms until it is true; raise ``ClusterError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise ClusterError(f"{what} within {timeout:g}s")


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``process`` (it and its children); nothing if it is gone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # it ended on its own


class Worker:
    """One ``celery -A bench.soak_steps worker`` process (prefork), in a session of its own."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, extra: list[str], concurrency: int) -> None:
        self.name = name
        self.hostname = f"{name}@{socket.gethostname()}"
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", "celery", "-A", "bench.soak_steps", "worker", "-P", "prefork"]
        command += ["-c", str(concurrency), "-Q", env["N3SOAK_QUEUE"], "-n", f"{name}@%h"]
        command += ["--without-mingle", "--without-gossip", "-l", "WARNING", *extra]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as when its machine goes away."""
        kill_group(self.process)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its process group if it lingers."""
        if self.process.poll() is None:
            kill_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.process)  # pool children a warm shutdown left behind
        if self.process.poll() is None:
            self.process.wait(5)


class Cluster:
    """The private Redis and the workers on it; the chaos thread kills and replaces workers through it.

    A supervisor thread plays systemd's ``Restart=always``: a worker that exits on its
    own (a crash) is recorded in ``exits`` and started again ``RESTART_SEC`` later.

    Args:
        workers: how many workers to keep running.
        concurrency: prefork processes per worker.
        worker_args: more ``celery worker`` options (``--n3-pool soak``).
        worker_env: more environment for the workers (``NAMEL3SS_CELERY_PROGRAM``).
    """

    def __init__(self, workers: int, concurrency: int, worker_args: list[str], worker_env: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="n3soak-"))
        (self.root / "redis").mkdir()
        (self.root / "logs").mkdir()
        self.redis = PrivateRedis(self.root / "redis")
        self.size = workers
        self.concurrency = concurrency
        self.worker_args = worker_args
        self.worker_env = worker_env
        self.workers: list[Worker] = []
        self.started = 0
        self.keep_logs = False
        self.exits: list[Exit] = []
        self._lock = threading.Lock()
        self._closed = False
        self._supervising = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="soak-supervisor", daemon=True)
        atexit.register(self.close)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def env(self) -> dict[str, str]:
        """The workers' environment: this one, the private Redis, the repository on ``PYTHONPATH``."""
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            **self.worker_env,
            "PYTHONPATH": path,
            "N3SOAK_REDIS_URL": self.redis.url,
            "N3SOAK_QUEUE": os.environ.get("N3SOAK_QUEUE", "soak"),
        }

    def start(self, ping: Callable[[list[str]], object]) -> None:
        """Start Redis and the workers; return once every worker answers ``ping([hostname])``."""
        try:
            self.redis.start()
        except ServerDidNotStart as exc:
            raise ClusterError(str(exc)) from exc
        for _ in range(self.size):
            self.add_worker()
        for worker in list(self.workers):
            wait_for(partial(ping, [worker.hostname]), START_TIMEOUT, f"worker {worker.name} did not answer ping")
        self._supervising.set()
        self._supervisor.start()

    def _supervise(self) -> None:
        """Every 0.5 s: record the workers that exited on their own; start one per exit ``RESTART_SEC`` later."""
        due: list[float] = []
        while self._supervising.is_set():
            time.sleep(0.5)
            with self._lock:
                gone = [w for w in self.workers if w.process.poll() is not None]
                for worker in gone:
                    self.workers.remove(worker)
            for worker in gone:
                self.exits.append(Exit(worker.name, time.time(), worker.process.returncode))
                due.append(time.monotonic() + RESTART_SEC)
            while due and due[0] <= time.monotonic() and self._supervising.is_set():
                due.pop(0)
                self.add_worker()

    def add_worker(self) -> Worker:
        """Start one more worker (not waiting for it)."""
        with self._lock:
            self.started += 1
            worker = Worker(f"soak{self.started}", self.env(), self.logs, self.worker_args, self.concurrency)
            self.workers.append(worker)
            return worker

    def kill_random(self, rng: random.Random) -> str | None:
        """SIGKILL one running worker chosen by ``rng`` (with its children) and start a replacement."""
        with self._lock:
            alive = [w for w in self.workers if w.process.poll() is None]
            if not alive:
                return None
            victim = rng.choice(alive)
            self.workers.remove(victim)
        victim.kill()
        self.add_worker()
        return victim.name

    def error_lines(self) -> Counter[str]:
        """Lines at ERROR or CRITICAL in every log (the workers', the dispatcher's), by message (ids, numbers generic)."""
        found: Counter[str] = Counter()
        for path in self.logs.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                level = re.search(r"(ERROR|CRITICAL)/[\w-]+\] (.*)", line)
                if level:
                    found[re.sub(r"[0-9a-f-]{32,36}|\d+(\.\d+)?", "<n>", level.group(2))[:140]] += 1
        return found

    def stop_workers(self) -> None:
        """Stop the supervisor, then every worker (warm shutdown, then SIGKILL)."""
        if self._supervising.is_set():
            self._supervising.clear()
            self._supervisor.join()
        with self._lock:
            workers, self.workers = self.workers, []
        for worker in workers:
            kill_group(worker.process, signal.SIGTERM)
        for worker in workers:
            worker.stop()

    def close(self) -> None:
        """Stop the workers and Redis, remove the Redis directory (and the logs unless ``keep_logs``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_workers()
        finally:
            self.redis.stop()
            shutil.rmtree(self.root / "redis", ignore_errors=True)
            if not self.keep_logs:
                shutil.rmtree(self.root, ignore_errors=True)
