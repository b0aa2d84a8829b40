"""A RabbitMQ node of a test's own (its own node name, ports and data directory), to stop and start at will
without touching the machine's shared broker. Starting one takes a few seconds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def available() -> bool:
    return shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None


def erlang_has_ssl() -> bool:
    """Whether the Erlang that runs ``rabbitmq-server`` can load its ``ssl`` application (a TLS listener)."""
    if shutil.which("erl") is None:
        return False
    probe = "case code:which(ssl) of non_existing -> halt(1); _ -> halt(0) end."
    try:
        ran = subprocess.run(["erl", "-noshell", "-eval", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ran.returncode == 0


class PrivateRabbit:
    """``rabbitmq-server`` as node ``n3test<port>@localhost`` listening on a spare port, no plugins. Its
    files live in a folder of the system's temporary directory (the server may run as the ``rabbitmq``
    user, who cannot enter pytest's own temporary folders); ``remove`` deletes it.

    With ``tls=True`` it listens for AMQP over TLS only (``amqps://``) on that port: a ``trustme`` CA
    (``ca``, its file ``ca_file``) signs its certificate for 127.0.0.1 and localhost, and it requires
    each client to present a certificate signed by that CA (``verify_peer``, ``fail_if_no_peer_cert``);
    ``client_cert`` writes one.
    """

    def __init__(self, tls: bool = False) -> None:
        directory = Path(tempfile.mkdtemp(prefix="n3rabbit-"))
        self.port = _free_port()
        self.node = f"n3test{self.port}@localhost"
        self.directory = directory
        self.url = f"{'amqps' if tls else 'amqp'}://guest:guest@127.0.0.1:{self.port}//"
        for sub in ("mnesia", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "env.conf").write_text(f"NODENAME={self.node}\nERL_EPMD_ADDRESS=127.0.0.1\n")
        listeners = f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
        if tls:
            listeners = self._tls_listener()
        (directory / "rabbitmq.conf").write_text(f"{listeners}loopback_users = none\n")
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o777)  # the server script may drop to the rabbitmq user
        self.env = {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(directory / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(directory / "feature_flags"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        }
        self.start()

    def _tls_listener(self) -> str:
        import trustme  # a test dependency; only a TLS node needs it

        self.ca = trustme.CA()
        self.ca_file = self.directory / "ca.pem"
        cert_file, key_file = self.directory / "server.pem", self.directory / "server.key"
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(cert_file))
        server.private_key_pem.write_to_path(str(key_file))
        return (
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {self.ca_file}\n"
            f"ssl_options.certfile = {cert_file}\n"
            f"ssl_options.keyfile = {key_file}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )

    def client_cert(self, name: str, folder: Path) -> tuple[Path, Path]:
        """A client certificate for ``name`` signed by this node's CA, written to ``folder``: (cert, key)."""
        issued = self.ca.issue_cert(name)
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert_file))
        issued.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, timeout=60)
        wait_until(self.answers, 60, lambda: f"RabbitMQ node {self.node} did not start:\n{self.log()}")

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env, timeout=60, capture_output=True)
        wait_until(lambda: not self.answers(), 30, f"RabbitMQ node {self.node} did not stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        logs = sorted((self.directory / "log").glob("*.log"))
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs)
