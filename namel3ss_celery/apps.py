"""The Celery app namel3ss-celery makes when it is given none, and what it asks of a user's app."""

from __future__ import annotations

import ipaddress
import os
import socket
import weakref

from celery import Celery
from kombu.exceptions import OperationalError

from .errors import BrokerUnavailable, ConfigurationError
from .settings import EMBEDDED_BACKEND, EMBEDDED_BROKER, Settings


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``: their broker and backend, or the embedded default."""
    app = Celery("namel3ss_celery", set_as_current=False)
    if settings.embedded:
        app.conf.update(
            broker_url=EMBEDDED_BROKER,
            result_backend=EMBEDDED_BACKEND,
            # The memory transport polls; its default of 1s per empty poll makes every hop slow.
            broker_transport_options={"polling_interval": 0.005},
        )
    else:
        app.conf.update(broker_url=settings.broker_url, result_backend=settings.result_backend)
    app.conf.update(result_expires=settings.result_expires, task_serializer="json", accept_content=["json"])
    return app


def check_backend(app: Celery) -> None:
    """Refuse a result backend that cannot serve runs.

    Raises:
        ConfigurationError: ``rpc://``, which cannot join chords or be read from another process.
    """
    backend = str(app.conf.result_backend or "")
    if backend.startswith("rpc"):
        raise ConfigurationError(
            f"result_backend {backend!r} cannot join chords or be read from another process; "
            "set CELERY_RESULT_BACKEND (result_backend) to redis:// or another store",
            setting="result_backend",
        )


BROKER_TRIES = 3  # connection attempts before dispatch gives up on an unreachable broker (about a second)


def check_broker(app: Celery) -> None:
    """Make sure the broker answers before a run is recorded: a wrong port or bad credentials are an error
    of ``dispatch``, not a run that fails later. A connection already open costs nothing here.

    Raises:
        BrokerUnavailable: no connection after ``BROKER_TRIES`` attempts (naming the URL, without its password).
    """
    with app.pool.acquire(block=True) as connection:
        try:
            connection.ensure_connection(max_retries=BROKER_TRIES - 1, interval_start=0.1, interval_step=0.4)
        except (OperationalError, *connection.connection_errors, *connection.channel_errors) as exc:  # 403: refused
            raise unavailable(connection.as_uri(), exc) from exc


def unavailable(broker: str, exc: BaseException) -> BrokerUnavailable:
    """The error of a dispatch whose broker did not take its messages: nothing was published."""
    return BrokerUnavailable(
        f"cannot reach the broker {broker} ({type(exc).__name__}: {exc}); nothing was published or recorded: "
        "check broker_url (CELERY_BROKER_URL), its credentials, and that the server runs",
        broker,
    )


def broker_identity(app: Celery) -> str:
    """The broker ``app`` publishes to, as its runs record it (``engine.home``): the transport, the host (its
    address, so ``localhost`` and ``127.0.0.1`` are one broker; a loopback address, a socket or the memory
    transport also names this machine, as another machine's is another broker), the port, the virtual host
    (a Redis database) and a Sentinel's master; no credentials. A failover list is named by its first broker.
    Worked out once per app and broker URL (the first time resolves the host)."""
    url = str(app.conf.broker_url or "")
    known = _identities.get(app)
    if known is not None and known[0] == url:
        return known[1]
    identity, resolved = _identity(app)
    if resolved:  # a host that did not resolve now is looked up again next time
        _identities[app] = (url, identity)
    return identity


_identities: weakref.WeakKeyDictionary[Celery, tuple[str, str]] = weakref.WeakKeyDictionary()


def _identity(app: Celery) -> tuple[str, bool]:
    """The identity, and whether its host resolved."""
    with app.connection_for_write() as connection:
        transport = connection.transport
        driver = str(getattr(transport, "driver_type", connection.transport_cls))
        port = connection.port or getattr(transport, "default_port", None) or ""
        vhost = str(connection.virtual_host or "/")
        host, resolved = _address(connection.hostname or "localhost")
        master = (connection.transport_options or {}).get("master_name")
    if driver == "redis":
        vhost = vhost.strip("/") or "0"
    if driver == "memory" or not port or _loopback(host):  # this machine's own, or this process's
        host = f"{socket.gethostname()}{f'.{os.getpid()}' if driver == 'memory' else ''}/{host}"
    return f"{driver}://{host}:{port}/{vhost}" + (f"?master={master}" if master else ""), resolved


def _address(host: str) -> tuple[str, bool]:
    """``host``'s address (in brackets when IPv6), or ``host`` itself when it does not resolve now; and which."""
    try:
        found = str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError):
        return host, False
    return (f"[{found}]" if ":" in found else found), True


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"
