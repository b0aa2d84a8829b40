"""``namel3ss-celery events --serve``: the deployment's event stream over WebSocket, and the run view
(``/``: recent runs; ``/runs/<run_id>``: one run, drawn and updated live; see ``runview``), and Prometheus
metrics (``/metrics``; see ``metrics``).

A client connects to ``ws://HOST:PORT/events`` with optional query parameters: ``run_id`` (the events of
one run: its ``instance_id``), ``workflow`` (``workflow_name``), ``event_type`` (repeatable) and
``after`` (a stream id: resume after the last event seen; by default, from now on). The first message
is ``{"ready": true, "after": <stream id>}``: every event after that id follows. Each next one is
``{"id": <stream id>, "event": <Event.to_dict()>}``, in stream order. The server binds to 127.0.0.1
unless told otherwise; on any other address it needs a token, or ``insecure=True``.

With a token, every request shows it: ``Authorization: Bearer TOKEN``, ``?token=TOKEN``, or the run view's
cookie. A page opened with a valid ``?token=`` sets that cookie (``HttpOnly``, ``SameSite=Strict``; its value
a digest of the token, not the token), so the browser's later requests (the links between pages, the page's
own fetches and its WebSocket) are let in without the token in their URLs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..engine.ports import CoordinationStore
from ..errors import ConfigurationError
from .model import Event
from .runview import respond

if TYPE_CHECKING:  # prometheus-client is the events extra's: imported where metrics are served
    from .metrics import RunMetrics
from .stream import EventStore

logger = logging.getLogger("namel3ss_celery")

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_ENV = "NAMEL3SS_CELERY_EVENTS_TOKEN"  # the token, when --token is not given (kept out of argv)
POLL = 1.0  # seconds a read waits for new events before looking again
COOKIE = "n3_events"  # the run view's cookie: set on a valid ?token=, sent by the browser from then on


class Credential(str, Enum):
    """How a request showed the token."""

    HEADER = "header"
    QUERY = "query"
    COOKIE = "cookie"


def cookie_value(token: str) -> str:
    """What the run view's cookie holds for ``token``: a digest of it, so the browser never stores the token."""
    return hmac.new(token.encode(), b"namel3ss-celery run view", hashlib.sha256).hexdigest()


def cookie_header(token: str) -> str:
    """The ``Set-Cookie`` header value a page opened with a valid ``?token=`` answers with."""
    return f"{COOKIE}={cookie_value(token)}; Path=/; HttpOnly; SameSite=Strict"


def _cookies(headers: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers:
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            found.setdefault(name, value.strip().strip('"'))
    return found


def credential(token: str, authorization: str, query: Mapping[str, list[str]], cookies: list[str]) -> Credential | None:
    """How a request showed ``token`` (its ``Authorization`` header, its query, its ``Cookie`` headers), or
    ``None`` when it did not."""
    bearer = authorization.removeprefix("Bearer ").strip()
    if bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return Credential.HEADER
    given = query.get("token", [""])[0]
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return Credential.QUERY
    kept = _cookies(cookies).get(COOKIE, "")
    if kept and hmac.compare_digest(kept.encode(), cookie_value(token).encode()):
        return Credential.COOKIE
    return None


@dataclass(frozen=True)
class Selection:
    """Which events a client asked for."""

    run_id: str | None = None
    workflow: str | None = None
    event_types: frozenset[str] = frozenset()
    after: str = "$"

    @classmethod
    def from_query(cls, query: Mapping[str, list[str]]) -> Selection:
        first = {key: values[0] for key, values in query.items() if values}
        return cls(
            first.get("run_id"), first.get("workflow"), frozenset(query.get("event_type", [])), first.get("after", "$")
        )

    def wants(self, event: Event) -> bool:
        data = event.data
        if self.run_id is not None and self.run_id not in (data.get("instance_id"), event.metadata.get("run_id")):
            return False
        if self.workflow is not None and data.get("workflow_name") != self.workflow:
            return False
        return not self.event_types or str(event.event_type) in self.event_types


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve beyond this machine without a token, unless told ``insecure``.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and there is no token and no ``insecure``.
    """
    if host not in LOCAL_HOSTS and not token and not insecure:
        raise ConfigurationError(
            f"the events server would listen on {host}, beyond this machine, with no token: give --token "
            "(clients send Authorization: Bearer TOKEN), or --insecure if something else guards it",
            setting="host",
        )


async def serve(
    store: EventStore,
    host: str,
    port: int,
    token: str | None = None,
    stop: asyncio.Event | None = None,
    runs: CoordinationStore | None = None,
    metrics: RunMetrics | None = None,
) -> None:
    """Serve the stream until ``stop`` is set (or for ever); with ``runs`` (the coordination store), the run
    view's pages too (``runview``); with ``metrics``, Prometheus's ``/metrics``."""
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as websocket_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response
    from websockets.protocol import State

    async def route(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path)
        query = parse_qs(path.query)
        shown = None
        if token:
            authorization = request.headers.get("Authorization", "")
            shown = credential(token, authorization, query, request.headers.get_all("Cookie"))
            if shown is None:
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN once in a browser\n",
                )
        if path.path.rstrip("/") == "/events":
            return None  # the WebSocket handshake goes on
        if path.path.rstrip("/") == "/metrics" and metrics is not None:
            from .metrics import CONTENT_TYPE

            rendered = await asyncio.to_thread(metrics.render)
            headers = Headers([("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(rendered)))])
            return Response(200, "OK", headers, rendered)
        if runs is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "the event stream is at /events\n")
        status, body = await asyncio.to_thread(respond, store, runs, path.path, query)
        data = body.encode()
        headers = Headers([("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))])
        if token and shown == Credential.QUERY:  # a browser from now on: its links, fetches and WebSocket
            headers["Set-Cookie"] = cookie_header(token)
        return Response(status, HTTPStatus(status).phrase, headers, data)

    async def stream(connection: ServerConnection) -> None:
        selection = Selection.from_query(parse_qs(urlsplit(connection.request.path).query))  # type: ignore[union-attr]
        after = selection.after if selection.after != "$" else await asyncio.to_thread(store.newest)
        await connection.send(json.dumps({"ready": True, "after": after}))  # what follows comes after this id
        while connection.state is State.OPEN:  # a client gone (or the server closing) ends it within POLL
            batch = await asyncio.to_thread(store.read, after, 100, POLL)
            for stream_id, event in batch:
                after = stream_id
                if selection.wants(event):
                    await connection.send(json.dumps({"id": stream_id, "event": event.to_dict()}))

    async with websocket_serve(stream, host, port, process_request=route) as server:
        logger.info("events served on ws://%s:%d/events", host, port)
        await (stop.wait() if stop is not None else server.serve_forever())


def run_server(
    store: EventStore,
    host: str,
    port: int,
    token: str | None,
    insecure: bool,
    runs: CoordinationStore | None = None,
    metrics: RunMetrics | None = None,
) -> Any:
    """Check the exposure, then serve until interrupted (metrics follow the stream meanwhile)."""
    check_exposure(host, token, insecure)
    stop = None
    if metrics is not None:
        from .metrics import start

        stop = start(metrics, store, runs)
    try:
        return asyncio.run(serve(store, host, port, token, runs=runs, metrics=metrics))
    finally:
        if stop is not None:
            stop.set()
