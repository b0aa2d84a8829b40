"""A ``redis-server`` of a test's (or the soak's) own: a free port of 127.0.0.1, AOF fsynced on every write,
no RDB snapshots, so it can be stopped and started again on the same port and directory with every key
back. Never the machine's shared Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.waiting import poll, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerDidNotStart(RuntimeError):
    """The server did not answer in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str, connect_timeout: float, timeout: float | None = None) -> bool:
    """True when the Redis at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def redis_server(args: list[str], url: str, what: str) -> Iterator[None]:
    """``redis-server`` started with ``args``, while the block runs: it answers at ``url`` first (``what`` names
    it in the failure), and is stopped after."""
    process = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: answers(url, connect_timeout=0.5),
            20,
            lambda: f"redis-server with {what} did not start (exit {process.poll()})",
        )
        yield
    finally:
        process.terminate()
        process.wait(20)


class PrivateRedis:
    """``redis-server`` in ``directory`` (started by ``start``), at ``url``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers PING (its AOF loaded).

        Raises:
            ServerDidNotStart: it did not answer within ``START_TIMEOUT``.
        """
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        command += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if poll(self.answers, START_TIMEOUT, every=0.05) is None:
            raise ServerDidNotStart(f"redis-server on port {self.port} did not answer (see {self.directory})")

    def answers(self) -> bool:
        """True when the server answers PING (not while it is loading its AOF)."""
        return answers(self.url, connect_timeout=0.2, timeout=0.5)

    def stop(self) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits; killed if it has not within ``STOP_TIMEOUT``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended on its own meanwhile
            self.process.wait(5)

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port and directory."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def client(self) -> redis.Redis[str]:
        """A new client of this server (strings)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=10)
