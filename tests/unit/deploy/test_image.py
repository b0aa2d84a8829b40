"""The Dockerfile compose and Kubernetes run: what it installs, where it puts the project, whom it runs as.

No Docker engine runs here: the instructions are read as Docker reads them, and the install
step's shell runs in a directory laid out like a project, with ``pip`` stood in by a script
that records its arguments.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from namel3ss_celery import __version__

from .pools import program, rendered


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments left out, as Docker parses them."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + "\n"
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        found.append((keyword, arguments))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return found


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_the_image_holds_the_project_where_the_services_run(target: str) -> None:
    files = rendered(program(), target, workdir="/srv/proj", image="reg.example/proj:7")
    steps = instructions(files["Dockerfile"])
    assert [keyword for keyword, _ in steps] == ["FROM", "ENV", "WORKDIR", "COPY", "RUN", "RUN", "USER", "ENV"]
    assert steps[0] == ("FROM", "python:3.12-slim")
    assert steps[2:4] == [("WORKDIR", "/srv/proj"), ("COPY", ". .")]
    assert steps[-2:] == [("USER", "10001"), ("ENV", "PYTHONPATH=/srv/proj")]  # not root; the steps import
    assert "useradd --system --no-create-home --uid 10001 celery" in steps[5][1]
    assert "docker build -f path/to/this/Dockerfile -t reg.example/proj:7 ." in files["Dockerfile"]
    assert files["Dockerfile.dockerignore"].splitlines()[2:] == [
        ".git",
        ".venv",
        "venv",
        "**/__pycache__",
        "**/*.pyc",
        ".pytest_cache",
        ".mypy_cache",
        ".tox",
    ]


@pytest.mark.parametrize(
    ("project_files", "broker", "installed"),
    [
        ([], "redis://redis:6379/0", [f"namel3ss-celery=={__version__}"]),
        (["requirements.txt"], "redis://redis:6379/0", [f"namel3ss-celery=={__version__}", "-r", "requirements.txt"]),
        (["pyproject.toml"], "redis://redis:6379/0", [f"namel3ss-celery=={__version__}", "."]),
        (
            ["setup.py", "requirements.txt"],
            "redis://redis:6379/0",
            [f"namel3ss-celery=={__version__}", "-r", "requirements.txt", "."],
        ),
        (["setup.cfg"], "redis://redis:6379/0", [f"namel3ss-celery=={__version__}"]),  # pip needs pyproject or setup.py
        (["namel3ss-celeryr==0.1.0"], "amqp://guest:guest@rabbitmq//", [f"namel3ss-celery[rabbitmq]=={__version__}"]),
    ],
)
def test_the_install_step_installs_namel3ss_celery_and_the_project(
    tmp_path: Path, project_files: list[str], broker: str, installed: list[str]
) -> None:
    files = rendered(program(), "compose", broker_url=broker)
    [install] = [arguments for keyword, arguments in instructions(files["Dockerfile"]) if "pip install" in arguments]
    project = tmp_path / "project"
    project.mkdir()
    for name in project_files:
        (project / name).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pip = bin_dir / "pip"
    pip.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "$PIP_ARGS"\n')
    pip.chmod(pip.stat().st_mode | stat.S_IEXEC)
    args = tmp_path / "args"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PIP_ARGS": str(args)}
    subprocess.run(["/bin/sh", "-c", install], cwd=project, env=env, check=True, timeout=30)
    assert args.read_text().splitlines() == ["install", *installed]
