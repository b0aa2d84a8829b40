"""The command line's answers to the usual mistakes: one line saying what to do, exit 2, no traceback, and
nothing published. No broker: every command here stops before it would connect."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from namel3ss_celery.cli import main

pytestmark = pytest.mark.timeout(60)

PROGRAM = "worker_pools:\n  - {name: crawl, queue_name: crawl}\nparallel_blocks:\n  - {name: b, steps: [{target: t}]}\n"


@pytest.fixture(autouse=True)
def _no_env(clean_env: None) -> None:
    """No CELERY_* or NAMEL3SS_CELERY_* from the shell."""


@pytest.fixture
def program(tmp_path: Path) -> str:
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM)
    return str(path)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command; it must exit 2 with one error line and nothing on stdout. That line."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ("[1,2]", "error: context: a run's context is a mapping of JSON data (a dict), not list"),
        ('"text"', "error: context: a run's context is a mapping of JSON data (a dict), not str"),
        ("{'a': 1}", "error: context: --context is not JSON: Expecting property name enclosed in double quotes"),
    ],
)
def test_a_context_that_is_not_a_json_object_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], program: str, context: str, error: str
) -> None:
    assert refused(capsys, ["run", program, "--context", context]).startswith(error)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["dlq", "list", "--queue", "crawl.dead"],
            "error: dead-letter queues live on a broker: give --broker (or CELERY_BROKER_URL), or -A/--app",
        ),
        (
            ["dlq", "requeue", "--queue", "crawl.dead"],
            "error: dead-letter queues live on a broker: give --broker (or CELERY_BROKER_URL), or -A/--app",
        ),
        (
            ["status", "0" * 32],
            "error: status reads a run from the coordination store of the broker it was dispatched on, and no "
            "broker was given: give --broker (or CELERY_BROKER_URL), or -A/--app",
        ),
        (
            ["events", "--limit", "1"],
            "error: the event stream lives in the coordination store (Redis): give --broker (or "
            "CELERY_BROKER_URL), or -A/--app",
        ),
        (
            ["worker", "--pool", "crawl", "--program", "PROGRAM"],
            "error: a pool worker needs a broker: give --broker (or CELERY_BROKER_URL)",
        ),
    ],
)
def test_a_command_that_needs_a_broker_says_so(
    capsys: pytest.CaptureFixture[str], program: str, argv: list[str], error: str
) -> None:
    assert refused(capsys, [program if word == "PROGRAM" else word for word in argv]) == error


PROJECT = """
from celery import Celery

app = Celery("proj_{tag}", broker="redis://:sekrit@127.0.0.1:1/3", backend="redis://127.0.0.1:1/4")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A project of one's own, ``proj_<tag>/celery.py`` with its Celery app, the current directory its root."""
    tag = f"{abs(hash(request.node.nodeid)):x}"[:8]
    name = f"proj_{tag}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "celery.py").write_text(textwrap.dedent(PROJECT.format(tag=tag)))
    (tmp_path / "program.yaml").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


class Exec(Exception):
    """Raised in place of ``os.execve``: what would have run."""

    def __init__(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(path)
        self.argv, self.env = argv, env


def execve(path: str, argv: list[str], env: dict[str, str]) -> Any:
    raise Exec(path, argv, env)


def test_worker_with_the_users_app_runs_celery_on_that_app_and_its_broker(
    project: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(Exec) as ran:
        main(["worker", "-A", project, "--pool", "crawl", "--program", "program.yaml", "--without-gossip"])
    argv, env = ran.value.argv, ran.value.env
    assert argv[:6] == [sys.executable, "-m", "celery", "-A", project, "worker"]
    assert argv[6:9] == ["-Q", "crawl", "-n"] and argv[-1] == "--without-gossip"
    assert "CELERY_BROKER_URL" not in env and "CELERY_RESULT_BACKEND" not in env  # the app's own
    assert (env["NAMEL3SS_CELERY_POOL"], env["NAMEL3SS_CELERY_PROGRAM"]) == ("crawl", os.path.abspath("program.yaml"))
    assert capsys.readouterr().err.startswith(" ".join(argv[:6]))


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["-A", "no_such_project"], "error: --app no_such_project: no Celery app found there (ModuleNotFoundError"),
        (["-A", "PROJECT", "--broker", "redis://x"], "error: --app PROJECT brings its own broker and result backend"),
    ],
)
def test_worker_with_a_wrong_app_says_so(
    project: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    monkeypatch.setattr(os, "execve", execve)
    args = [project if word == "PROJECT" else word for word in argv]
    message = refused(capsys, ["worker", *args, "--pool", "crawl", "--program", "program.yaml"])
    assert message.startswith(error.replace("PROJECT", project)), message
