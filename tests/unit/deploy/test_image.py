"""The Dockerfile compose and Kubernetes run: what it installs, where it puts the project, whom it runs as.

No Docker engine runs here: the instructions are read as Docker reads them, and the install
step's shell runs in a directory laid out like a project, with ``pip`` stood in by a script
that records its arguments. tests/integration/test_deploy_files.py runs that step with the real
``pip`` in a new virtual environment, and a worker from it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from namel3ss_celery import __version__
from namel3ss_celery.deploy.image import build_paths
from namel3ss_celery.errors import ConfigurationError

from .dockerfile import instructions
from .pools import program, rendered


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_the_image_holds_the_project_where_the_services_run(target: str) -> None:
    files = rendered(program(), target, workdir="/srv/proj", image="reg.example/proj:7", out="ops/deploy")
    steps = instructions(files["Dockerfile"])
    assert [keyword for keyword, _ in steps] == ["FROM", "ENV", "WORKDIR", "COPY", "RUN", "RUN", "USER", "ENV"]
    assert steps[0] == ("FROM", "python:3.12-slim")
    assert steps[2:4] == [("WORKDIR", "/srv/proj"), ("COPY", ". .")]
    assert steps[-2:] == [("USER", "10001"), ("ENV", "PYTHONPATH=/srv/proj")]  # not root; the steps import
    assert "useradd --system --no-create-home --uid 10001 celery" in steps[5][1]
    # How to build it, from the project's directory, with the paths of these files:
    assert "#   pip wheel --no-deps --wheel-dir wheels PATH/TO/namel3ss-celery\n" in files["Dockerfile"]
    assert "docker build -f ops/deploy/Dockerfile -t reg.example/proj:7 ." in files["Dockerfile"]
    assert ("docker compose -f ops/deploy/compose.yaml up --build" in files["Dockerfile"]) == (target == "compose")
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


PINNED = f"namel3ss-celery=={__version__}"


@pytest.mark.parametrize(
    ("project_files", "broker", "installed"),
    [
        ([], "redis://redis:6379/0", [PINNED]),
        (["requirements.txt"], "redis://redis:6379/0", ["-r", "requirements.txt", PINNED]),
        # The project first: a checkout of namel3ss-celery is then the one pip keeps (after it, pip looks for a
        # namel3ss-celery wheel and fails when there is none).
        (["pyproject.toml"], "redis://redis:6379/0", [".", PINNED]),
        (["setup.py", "requirements.txt"], "redis://redis:6379/0", [".", "-r", "requirements.txt", PINNED]),
        (["setup.cfg"], "redis://redis:6379/0", [PINNED]),  # pip needs pyproject or setup.py
        (["namel3ss-celeryr==0.1.0"], "amqp://guest:guest@rabbitmq//", [f"namel3ss-celery[rabbitmq]=={__version__}"]),
    ],
)
def test_the_install_step_installs_the_project_and_namel3ss_celery_from_its_wheel(
    tmp_path: Path, project_files: list[str], broker: str, installed: list[str]
) -> None:
    files = rendered(program(), "compose", broker_url=broker)
    assert pip_arguments(files["Dockerfile"], tmp_path, project_files) == [
        "install",
        "--find-links",
        "wheels",
        *installed,
    ]


def test_the_wheels_folder_is_an_option_inside_the_project(tmp_path: Path) -> None:
    files = rendered(program(), "kubernetes", wheels="vendor/wheel house")
    assert pip_arguments(files["Dockerfile"], tmp_path, []) == ["install", "--find-links", "vendor/wheel house", PINNED]
    assert "--wheel-dir 'vendor/wheel house' PATH/TO/namel3ss-celery" in files["Dockerfile"]
    for outside in ("/opt/wheels", "../wheels", "wheels/../../x", ""):
        with pytest.raises(ConfigurationError, match="a folder of the project") as refused:
            rendered(program(), "compose", wheels=outside)
        assert refused.value.setting == "wheels"


def pip_arguments(dockerfile: str, tmp_path: Path, project_files: list[str]) -> list[str]:
    """The arguments the install step gives ``pip``, its shell run in a project holding ``project_files``."""
    [install] = [arguments for keyword, arguments in instructions(dockerfile) if "pip install" in arguments]
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
    return args.read_text().splitlines()


@pytest.mark.parametrize(
    ("out", "context", "dockerfile"),
    [
        ("deploy/pools/compose", "../../..", "deploy/pools/compose/Dockerfile"),
        ("deploy/./x/", "../..", "deploy/x/Dockerfile"),
        ("ops", "..", "ops/Dockerfile"),
        (".", ".", "Dockerfile"),
    ],
)
def test_build_paths_lead_from_the_files_back_to_the_project(out: str, context: str, dockerfile: str) -> None:
    assert build_paths(out) == (context, dockerfile)


def test_files_outside_the_project_are_placed_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    assert build_paths("../ops/compose") == ("../../proj", "../ops/compose/Dockerfile")
    assert build_paths(str(tmp_path / "ops")) == ("../proj", "../ops/Dockerfile")


def test_each_celery_service_of_compose_builds_the_image_from_the_project() -> None:
    files = rendered(program(), "compose", out="deploy/pools/compose", image="proj:1")
    services = yaml.safe_load(files["compose.yaml"])["services"]
    built = {name: service.get("build") for name, service in services.items()}
    assert built == {
        "redis": None,
        "worker-cpu": {"context": "../../..", "dockerfile": "deploy/pools/compose/Dockerfile"},
        "worker-io": {"context": "../../..", "dockerfile": "deploy/pools/compose/Dockerfile"},
        "beat": {"context": "../../..", "dockerfile": "deploy/pools/compose/Dockerfile"},
        "flower": None,  # Flower's own image
    }
    assert {services[name]["image"] for name in ("worker-cpu", "worker-io", "beat")} == {"proj:1"}
    # By default the files are where the command writes them: deploy/<program>/<target>.
    default = yaml.safe_load(rendered(program(), "compose")["compose.yaml"])["services"]
    assert default["beat"]["build"] == {"context": "../../..", "dockerfile": "deploy/program/compose/Dockerfile"}
