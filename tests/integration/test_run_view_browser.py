"""The run view in a real browser (Debian's chromium, driven by playwright): a page opened while a run goes
on redraws itself as its nodes and steps move on, without a reload; the race shows its winner and its
loser; the list of recent runs shows the run; the page asks nothing of any host but this one, and its
script raises no error.

Playwright cannot download a browser here: it drives ``/usr/bin/chromium`` (``.ci/run`` installs it).
Outside CI, without it, these tests are skipped with the reason; with ``CI=true`` that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import IN_CI

from .conftest import Cluster
from .steps import MARKER_TTL, gate_key
from .workers import EventsServer

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000  # the longest any one wait in the page may take


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so a missing browser is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium from Debian's package, launched by playwright."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=WAIT_MS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[EventsServer]:
    running = EventsServer("--broker", redis_url)
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Watched:
    """A page, and what it did: the URLs it asked for (WebSockets too), its console errors, its script's
    uncaught exceptions, and how many times its main frame loaded a document."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loads: int = 0

    def count_load(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.loads += 1

    def console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text} ({message.location})")


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    seen = Watched(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("websocket", lambda socket: seen.requests.append(socket.url))
    page.on("console", seen.console)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    page.on("framenavigated", seen.count_load)
    try:
        yield seen
    finally:
        context.close()


def shown(page: Any, selector: str) -> None:
    """Wait (``WAIT_MS`` at most) until an element matches ``selector``; fail showing what the page draws."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(selector, timeout=WAIT_MS)
    except PlaywrightTimeout:
        drawn = page.locator("body").inner_html(timeout=5_000)
        raise AssertionError(f"not within {WAIT_MS / 1000:g}s: {selector} in the page, which draws:\n{drawn}") from None


def program(gates: dict[str, str]) -> dict[str, Any]:
    """A race of two held steps, then a block of one held step; each goes on when its gate opens."""
    return {
        "parallel_blocks": [
            {
                "name": "quick",
                "strategy": "race",
                "steps": [
                    {"name": "slow", "target": "gated", "gate": gates["slow"], "seconds": 60},
                    {"name": "fast", "target": "gated", "gate": gates["fast"], "seconds": 60, "value": 1},
                ],
            },
            {"name": "held", "steps": [{"name": "door", "target": "gated", "gate": gates["door"], "seconds": 60}]},
        ],
        "workflows": [
            {
                "name": f"browsed-{gates['door'][:6]}",
                "steps": [
                    {"name": "first", "block": "quick"},
                    {"name": "second", "block": "held", "depends_on": ["first"]},
                ],
            }
        ],
    }


def test_the_run_view_follows_a_run_live_in_a_browser(
    watched: Watched, redis_cluster: Cluster, server: EventsServer
) -> None:
    page = watched.page
    gates = {name: uuid.uuid4().hex for name in ("slow", "fast", "door")}
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    run = redis_cluster.n3.dispatch(program(gates))
    try:
        response = page.goto(f"{server.url}/runs/{run.id}", wait_until="load")
        assert response is not None and response.status == 200
        shown(page, "#run [data-run-status=running]")
        page.evaluate("window.sameDocument = true")  # gone if the page ever loads again

        # both racers start (the page may have been drawn before they did): it redraws itself
        shown(page, "[data-node=first][data-status=running]")
        shown(page, "[data-step=fast][data-status=running]")
        shown(page, "[data-step=slow][data-status=running]")
        assert page.locator("[data-node=second]").get_attribute("data-status") == "waiting"

        client.set(gate_key(gates["fast"]), 1, ex=MARKER_TTL)  # the fast racer answers: it wins
        shown(page, "[data-node=first][data-status=completed]")
        shown(page, "[data-step=fast][data-status=completed][data-outcome=won]")
        shown(page, "[data-step=slow]:is([data-outcome=stopped],[data-outcome=stopping])")  # the loser
        assert "winner fast" in page.locator("[data-node=first]").inner_text()

        shown(page, "[data-node=second][data-status=running]")
        shown(page, "[data-step=door][data-status=running]")
        client.set(gate_key(gates["door"]), 1, ex=MARKER_TTL)
        shown(page, "[data-node=second][data-status=completed]")
        shown(page, "[data-step=door][data-status=completed]")
        shown(page, "#run [data-run-status=completed]")
        assert run.get(timeout=30).overall_status == "completed"
        assert page.evaluate("window.sameDocument === true"), "the page loaded again instead of redrawing"
        assert watched.loads == 1

        page.goto(f"{server.url}/", wait_until="load")  # the recent runs list it, completed, with a link
        shown(page, f"tr[data-run='{run.id}'][data-status=completed]")
        page.click(f"tr[data-run='{run.id}'] a")
        page.wait_for_url(f"{server.url}/runs/{run.id}")
        shown(page, "#run [data-run-status=completed]")
        page.wait_for_load_state("networkidle")
        # the graph's edge, from the right side of the node depended on to the left side of the other
        page.wait_for_selector("svg.edges path[data-edge='first second']", state="attached")  # a flat line, 0 high
        first, second, edge = (
            page.locator(selector).bounding_box()
            for selector in ("[data-node=first]", "[data-node=second]", "svg.edges path[data-edge='first second']")
        )
        assert first and second and edge
        assert abs(edge["x"] - (first["x"] + first["width"])) < 6 and abs(edge["x"] + edge["width"] - second["x"]) < 6
        assert page.locator("svg.edges path").count() == 1
    finally:
        for gate in gates.values():
            client.set(gate_key(gate), 1, ex=MARKER_TTL)
        client.close()

    asked = [url for url in watched.requests if urlsplit(url).scheme != "data"]  # data: URLs ask no host
    elsewhere = [url for url in asked if urlsplit(url).hostname != "127.0.0.1"]
    assert asked and not elsewhere, f"the page asked other hosts: {elsewhere}"
    assert not watched.errors, "\n".join(watched.errors)


def test_an_unknown_run_is_a_page_that_says_so(watched: Watched, server: EventsServer) -> None:
    page = watched.page
    url = f"{server.url}/runs/no-such-run"
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 404
    assert "No such run" in page.locator("h1").inner_text()
    page.wait_for_load_state("networkidle")
    own_status = [e for e in watched.errors if "status of 404" in e and f"'url': '{url}'" in e]
    assert watched.errors == own_status  # the page's own 404 is the one error the browser reports


TOKEN = "a token for the browser"


def test_behind_a_token_a_click_from_the_list_follows_a_run_live(
    watched: Watched, redis_cluster: Cluster, redis_url: str
) -> None:
    """As deployed (0.0.0.0 and a token): the list opened once with ``?token=``, its link to a running run
    (no token in it) opens the run, whose fetches and WebSocket get in with the cookie the list set."""
    page = watched.page
    guarded = EventsServer("--broker", redis_url, "--host", "0.0.0.0", "--token", TOKEN)
    gates = {name: uuid.uuid4().hex for name in ("slow", "fast", "door")}
    client = redis.Redis.from_url(redis_cluster.env["N3_TEST_BACKEND"])
    refused = 0
    try:
        response = page.goto(f"{guarded.url}/runs/nothing", wait_until="load")
        assert response is not None and response.status == 401  # no token, no cookie yet
        page.wait_for_load_state("networkidle")
        refused = len(watched.errors)  # that page's 401, and its /favicon.ico's
        run = redis_cluster.n3.dispatch(program(gates))
        page.goto(f"{guarded.url}/?token={TOKEN.replace(' ', '%20')}", wait_until="load")
        shown(page, f"tr[data-run='{run.id}']")
        assert page.get_attribute(f"tr[data-run='{run.id}'] a", "href") == f"/runs/{run.id}"
        page.click(f"tr[data-run='{run.id}'] a")
        page.wait_for_url(f"{guarded.url}/runs/{run.id}")
        shown(page, "[data-node=first][data-status=running]")
        client.set(gate_key(gates["fast"]), 1, ex=MARKER_TTL)
        client.set(gate_key(gates["door"]), 1, ex=MARKER_TTL)
        shown(page, "[data-step=fast][data-status=completed][data-outcome=won]")
        shown(page, "#run [data-run-status=completed]")  # redrawn: its fetches got in
        sockets = [url for url in watched.requests if urlsplit(url).scheme == "ws"]
        assert sockets and all("token=" not in url for url in sockets)  # the cookie, not the URL
        assert run.get(timeout=30).overall_status == "completed"
        page.click("a[href='/']")  # "recent runs", back again
        shown(page, f"tr[data-run='{run.id}'][data-status=completed]")
    finally:
        for gate in gates.values():
            client.set(gate_key(gate), 1, ex=MARKER_TTL)
        client.close()
        guarded.stop()
    assert not watched.errors[refused:], "\n".join(watched.errors)  # from the token on, nothing was refused
