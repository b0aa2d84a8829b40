"""Real ``celery worker`` processes for integration tests, started and stopped in bounded time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLI = shutil.which("namel3ss-celery", path=os.path.dirname(sys.executable)) or "namel3ss-celery"


class WorkerProcess:
    """``python -m celery -A <app> worker`` in a subprocess, logging to a file.

    ``cwd`` is where it starts (the repository by default); ``celery -A`` imports the app from there,
    as from a project's own directory. With ``inherit_env=False`` the process gets ``env`` alone (a
    command as a deploy file writes it, with that file's environment).
    """

    def __init__(
        self,
        app_module: str,
        env: Mapping[str, str],
        log_dir: Path,
        pool: str = "prefork",
        concurrency: int = 2,
        queues: list[str] | None = None,
        extra_args: list[str] | None = None,
        command: list[str] | None = None,
        name: str | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> None:
        self.name = name or f"n3test-{uuid.uuid4().hex[:8]}"
        self.hostname = f"{self.name}@{os.uname().nodename}"
        self.log_path = log_dir / f"{self.name}-{uuid.uuid4().hex[:4]}.log"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app_module,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{self.name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ]
        if queues:
            args += ["-Q", ",".join(queues)]
        args += extra_args or []
        if command is not None:  # a command of its own (namel3ss-celery worker --pool ...)
            args = command
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)} if inherit_env else dict(env)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=cwd or REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, app: Any, timeout: float = 45.0) -> None:
        """Wait until the worker answers a ping; fail with its log when it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return
        raise AssertionError(f"worker did not answer a ping within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """Its whole log (assertions look for lines anywhere in it; a failure message shows it all)."""
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def pool_worker(
    pool: str, program: Path, broker: str, backend: str, log_dir: Path, *extra: str, node: str | None = None
) -> WorkerProcess:
    """``namel3ss-celery worker --pool POOL`` for the test steps, named ``<pool>@host`` as worker_argv names
    it, or ``<node>@host`` (a later ``-n`` wins)."""
    command = [
        CLI,
        "worker",
        "--pool",
        pool,
        "--program",
        str(program),
        "--steps",
        "tests.integration.steps",
        "--broker",
        broker,
        "--backend",
        backend,
        "--without-mingle",
        "--without-gossip",
        *extra,
        *(["-n", f"{node}@%h"] if node else []),
    ]
    return WorkerProcess("namel3ss_celery", {}, log_dir, command=command, name=node or pool)


def client(broker: str, backend: str) -> Any:
    """A ``Namel3ssCelery`` on the default app that knows the test steps."""
    import tests.integration.steps  # noqa: F401 - the same steps the workers load
    from namel3ss_celery import Namel3ssCelery, Settings

    env = {
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": backend,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    return Namel3ssCelery(settings=Settings.from_mapping(env))


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EventsServer:
    """``namel3ss-celery events --serve`` on a free port, with only the CLI's own options (no CELERY_*)."""

    def __init__(self, *options: str) -> None:
        import socket

        from tests.waiting import wait_until

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
        self.process = subprocess.Popen(
            [CLI, "events", "--serve", "--port", str(self.port), *options],
            cwd=REPO,
            env=clean,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def listening() -> bool:
            assert self.process.poll() is None, self.process.stdout.read() if self.process.stdout else ""
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 30, "the events server to listen")

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=10)


def kill_with_children(worker: WorkerProcess) -> None:
    """SIGKILL a worker and its pool processes at once, as when its machine goes away."""
    children = [pid for pid in _pids() if _parent(pid) == worker.process.pid]
    for pid in [worker.process.pid, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own
    worker.process.wait(10)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # gone meanwhile
