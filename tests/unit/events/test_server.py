"""The events server behind a token, in this process on the memory stores: refused without it; a page opened
with ``?token=`` sets a cookie with which its links, its fetches and its WebSocket get in; and where it may
listen without one."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import CookieJar

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from namel3ss_celery.errors import ConfigurationError
from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.events.server import COOKIE, Credential, check_exposure, cookie_value, credential, serve
from namel3ss_celery.events.stream import MemoryEventStore
from namel3ss_celery.results import TaskStatus
from tests.unit.engine.test_conductor import block, report, start
from tests.waiting import wait_until

TOKEN = "s3cret token"  # a space: a token need not be a cookie-safe word


@dataclass
class Served:
    url: str
    run_id: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[Served]:
    """The server with ``TOKEN``, its run view on a run of one finished block."""
    conductor, recorder, run_id = start(block("all", 1))
    report(conductor, recorder.sent[0], TaskStatus.COMPLETED, 1)
    events = MemoryEventStore()
    events.append(Event.new(EventType.WORKFLOW_STARTED, "test", {"instance_id": run_id, "workflow_name": "b"}))
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve(events, "127.0.0.1", port, TOKEN, stop=stop, runs=conductor.store),),
        daemon=True,
    )
    thread.start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 10, "the server to listen")
    try:
        yield Served(f"http://127.0.0.1:{port}", run_id)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a" and dict(attrs).get("href"):
            self.hrefs.append(str(dict(attrs)["href"]))


def status_of(opener: urllib.request.OpenerDirector, url: str, **headers: str) -> int:
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


def links_of(opener: urllib.request.OpenerDirector, url: str) -> list[str]:
    with opener.open(url, timeout=10) as response:
        found = Links()
        found.feed(response.read().decode())
        return found.hrefs


def test_without_the_token_nothing_is_served(served: Served) -> None:
    plain = urllib.request.build_opener()
    for path in ("/", f"/runs/{served.run_id}", "/events"):
        assert status_of(plain, served.url + path) == 401
    assert status_of(plain, served.url + "/?token=wrong") == 401
    assert status_of(plain, served.url + "/", Cookie=f"{COOKIE}={cookie_value('wrong')}") == 401
    assert status_of(plain, served.url + "/", Cookie=f"{COOKIE}={TOKEN}") == 401  # the digest, not the token
    with pytest.raises(InvalidStatus) as refused:
        connect(served.url.replace("http", "ws") + "/events", open_timeout=10)
    assert refused.value.response.status_code == 401


def test_a_page_opened_with_the_token_lets_its_links_and_its_websocket_in(served: Served) -> None:
    jar = CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{served.url}/?token={urllib.request.quote(TOKEN)}", timeout=10) as response:
        assert response.status == 200
        set_cookie = response.headers["Set-Cookie"]
    assert set_cookie == f"{COOKIE}={cookie_value(TOKEN)}; Path=/; HttpOnly; SameSite=Strict"
    assert TOKEN not in set_cookie
    (run_link,) = [href for href in links_of(browser, served.url + "/") if href.startswith("/runs/")]
    assert run_link == f"/runs/{served.run_id}"  # no token in it: the cookie lets the click in
    assert status_of(browser, served.url + run_link) == 200
    assert status_of(browser, served.url + run_link + "?fragment=1") == 200  # the page's own redraws
    assert links_of(browser, served.url + run_link) == ["/"]  # "recent runs"
    assert status_of(browser, served.url + "/") == 200
    cookie = f"{COOKIE}={cookie_value(TOKEN)}"
    with connect(
        f"{served.url.replace('http', 'ws')}/events?run_id={served.run_id}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as ws:  # the page's WebSocket: the browser sends the cookie with it
        assert json.loads(ws.recv(timeout=10))["ready"]


def test_a_client_with_the_bearer_header_gets_in_and_no_cookie(served: Served) -> None:
    plain = urllib.request.build_opener()
    with plain.open(
        urllib.request.Request(served.url + "/", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10
    ) as response:
        assert response.status == 200 and response.headers["Set-Cookie"] is None
    with connect(
        served.url.replace("http", "ws") + "/events",
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        open_timeout=10,
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["ready"]


@pytest.mark.parametrize(
    ("authorization", "query", "cookies", "shown"),
    [
        (f"Bearer {TOKEN}", {}, [], Credential.HEADER),
        ("", {"token": [TOKEN]}, [], Credential.QUERY),
        ("", {}, [f"other=1; {COOKIE}={cookie_value(TOKEN)}"], Credential.COOKIE),
        ("", {}, ["other=1", f'{COOKIE}="{cookie_value(TOKEN)}"'], Credential.COOKIE),
        ("Bearer wrong", {"token": ["wrong"]}, [f"{COOKIE}=wrong"], None),
        ("", {}, [], None),
        ("Bearer ", {"token": [""]}, [f"{COOKIE}="], None),
    ],
)
def test_how_a_request_shows_the_token(
    authorization: str, query: dict[str, list[str]], cookies: list[str], shown: Credential | None
) -> None:
    assert credential(TOKEN, authorization, query, cookies) == shown


@pytest.mark.parametrize(
    ("host", "token", "insecure", "refused"),
    [
        ("127.0.0.1", None, False, False),
        ("localhost", None, False, False),
        ("0.0.0.0", None, False, True),
        ("0.0.0.0", "t", False, False),
        ("0.0.0.0", None, True, False),
        ("10.0.0.5", "", False, True),
    ],
)
def test_beyond_this_machine_the_server_needs_a_token_or_insecure(
    host: str, token: str | None, insecure: bool, refused: bool
) -> None:
    if refused:
        with pytest.raises(ConfigurationError, match="--token"):
            check_exposure(host, token, insecure)
    else:
        check_exposure(host, token, insecure)
