"""Make ``docs/run-view.png``, the README's picture of the run view, from a real run.

From the repository root, in the development virtualenv (``pip install -e '.[dev]'``)::

    python -m docs.screenshot

It starts a ``celery worker`` (prefork, 2 processes) and ``namel3ss-celery events --serve`` (127.0.0.1,
a free port) on Redis database 12 (``N3_SCREENSHOT_REDIS_URL`` names another), dispatches a workflow of
three nodes (a race of three models, a ``collect`` block of twelve page fetches of which one fails, and a
report after both; the steps are ``docs/run_view_steps.py``), waits until the run has completed, opens
``/runs/<run_id>`` in headless chromium (Debian's ``/usr/bin/chromium``, driven by playwright, 1280x900)
and saves the part of the page the run is drawn on. Every process it started is stopped, whatever happens.
Exit status 0 when the picture is saved.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "run-view.png"
REDIS_URL = os.environ.get("N3_SCREENSHOT_REDIS_URL") or "redis://127.0.0.1:6379/12"
STEP_MODULES = "docs.run_view_steps"
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 900  # the browser window (CSS pixels, one device pixel each: a small PNG)
WAIT = 60.0  # seconds any one wait may take: a worker's start, the server's, the run, the page

MODELS = [("small-model", 0.3), ("medium-model", 1.2), ("large-model", 4.0)]  # (name, seconds to answer)
PAGES = [
    ("home", 0.35),
    ("docs", 0.6),
    ("pricing", 0.25),
    ("blog", 0.5),
    ("changelog", 0.3),
    ("careers", 0.2, 404),
    ("status", 0.15),
    ("security", 0.45),
    ("faq", 0.3),
    ("api", 0.55),
    ("community", 0.4),
    ("contact", 0.2),
]

PROGRAM: dict[str, Any] = {
    "parallel_blocks": [
        {
            "name": "ask_models",
            "strategy": "race",
            "steps": [{"name": name, "target": "ask", "model": name, "seconds": s} for name, s in MODELS],
        },
        {
            "name": "fetch_pages",
            "strategy": "collect",
            "steps": [
                {
                    "name": page[0],
                    "target": "fetch",
                    "url": f"https://example.org/{page[0]}",
                    "seconds": page[1],
                    **({"status": page[2]} if len(page) > 2 else {}),
                }
                for page in PAGES
            ],
        },
    ],
    "workflows": [
        {
            "name": "research_brief",
            "steps": [
                {"name": "answer", "block": "ask_models"},
                {"name": "sources", "block": "fetch_pages"},
                {"name": "report", "target": "write_report", "depends_on": ["answer", "sources"]},
            ],
        }
    ],
}


class Failed(Exception):
    """The picture could not be made; the message says why (with the logs of the processes)."""


def main() -> int:
    """Run the workflow on a real worker and save the run view's picture; 0 when saved, 1 when not."""
    with tempfile.TemporaryDirectory(prefix="n3-screenshot-") as logs:
        try:
            run_id = shoot(Path(logs))
        except Failed as failure:
            print(f"no picture: {failure}", file=sys.stderr)
            return 1
    print(f"{OUTPUT.relative_to(REPO)}: run {run_id}, {OUTPUT.stat().st_size // 1024} KB")
    return 0


def shoot(logs: Path) -> str:
    """Start the processes, run the workflow, save the picture; the run's id."""
    from kombu.exceptions import OperationalError

    from namel3ss_celery import Namel3ssCelery, Namel3ssCeleryError, Settings

    if not os.access(CHROMIUM, os.X_OK):
        raise Failed(f"{CHROMIUM} is not installed (apt-get install chromium)")
    env = {
        **os.environ,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "NAMEL3SS_CELERY_STEP_MODULES": STEP_MODULES,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cli = shutil.which("namel3ss-celery", path=os.path.dirname(sys.executable)) or "namel3ss-celery"
    node = f"n3-screenshot-{uuid.uuid4().hex[:6]}"
    port = free_port()
    with ExitStack() as stack:
        n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
        stack.callback(n3.close)
        worker_command = [sys.executable, "-m", "celery", "-A", "namel3ss_celery", "worker", "-P", "prefork"]
        worker_command += ["-c", "2", "-n", f"{node}@%h", "--without-mingle", "--without-gossip", "-l", "INFO"]
        worker = stack.enter_context(started(worker_command, env, logs / "worker.log"))
        server_command = [cli, "events", "--serve", "--host", "127.0.0.1", "--port", str(port), "--broker", REDIS_URL]
        server = stack.enter_context(started(server_command, env, logs / "events.log"))
        hostname = f"{node}@{socket.gethostname()}"

        def answers() -> bool:
            try:
                return bool(n3.app.control.ping(destination=[hostname], timeout=0.5))
            except OperationalError as error:
                raise Failed(f"the broker at {REDIS_URL}: {error}") from error

        wait_until(answers, "the worker to answer", worker)
        wait_until(lambda: listening(port), "the events server to listen", server)

        try:
            run = n3.dispatch(PROGRAM, context={"question": "what is Celery?"})
            run.get(timeout=WAIT).raise_for_status()  # the picture is of a completed run
        except Namel3ssCeleryError as error:
            raise Failed(f"the run: {error}\n{worker.tail()}") from error
        picture(f"http://127.0.0.1:{port}/runs/{run.id}")
        return run.id


def picture(url: str) -> None:
    """Open ``url`` in headless chromium, wait until it shows the completed run, save what it draws to ``OUTPUT``."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=WAIT * 1000)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
            page.set_default_timeout(WAIT * 1000)
            response = page.goto(url, wait_until="load")
            if response is None or response.status != 200:
                raise Failed(f"{url} answered {response.status if response else 'nothing'}")
            page.wait_for_selector("#run [data-run-status=completed]")
            page.wait_for_selector("[data-node=report][data-status=completed]")
            page.wait_for_function("!document.querySelector('[data-outcome=stopping]')")  # every loser reported
            page.screenshot(path=str(OUTPUT), clip=drawn(page))
        except PlaywrightError as error:
            raise Failed(f"the page at {url}: {error}") from error
        finally:
            browser.close()


DRAWN = """() => {
  let right = 0, bottom = 0;
  const title = document.createRange();
  title.selectNodeContents(document.querySelector('#run h1'));
  for (const box of [title.getBoundingClientRect(), ...[...document.querySelectorAll('#run .node')].map(
      (node) => node.getBoundingClientRect())]) {
    right = Math.max(right, box.right); bottom = Math.max(bottom, box.bottom);
  }
  const margin = parseFloat(getComputedStyle(document.body).marginLeft);
  return {x: 0, y: 0, width: Math.ceil(right + margin), height: Math.ceil(bottom + margin)};
}"""


def drawn(page: Any) -> Any:
    """The part of the page the run is drawn on, with the page's margin around it (no empty viewport)."""
    return page.evaluate(DRAWN)


@dataclass(frozen=True)
class Started:
    """A process this script started, and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` of its output."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def started(command: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[Started]:
    """``command`` running in its own process group, its output in ``log_path``; stopped on the way out:
    SIGTERM, then SIGKILL to its whole group when it has not exited within ``WAIT`` seconds."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield Started(process, log_path)
        finally:
            process.terminate()
            try:
                process.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: the group is still this process's
                process.wait(WAIT)


def wait_until(ready: Callable[[], bool], what: str, started: Started) -> None:
    """Poll ``ready`` until it holds, for ``WAIT`` seconds at most; fail at once if ``started`` exits."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise Failed(f"waiting for {what}, it exited with {started.process.returncode}:\n{started.tail()}")
        if ready():
            return
        time.sleep(0.1)
    raise Failed(f"waited {WAIT:g}s for {what}:\n{started.tail()}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
