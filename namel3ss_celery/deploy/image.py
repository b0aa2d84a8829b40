"""The image compose and Kubernetes run: a ``Dockerfile`` for the user's project, and what the build leaves out.

The build context is the project's root directory (where the program file
and the step modules are); the Dockerfile may live anywhere, as the rendered
one does under ``deploy/``, and BuildKit reads ``Dockerfile.dockerignore``
beside it.

namel3ss-celery comes from its wheel in a folder of the project (``wheels/``
by default), made before the build from a checkout of namel3ss-celery with
``pip wheel --no-deps --wheel-dir wheels PATH``: pip finds it there
(``--find-links``), and everything else on the package index. A project that
is itself a checkout of namel3ss-celery needs no wheel: it is installed
first, and is the namel3ss-celery the image keeps.
"""

from __future__ import annotations

import os
import shlex
from importlib.metadata import version
from pathlib import PurePosixPath

from ..routing import Broker, broker_kind
from .common import GENERATED, Deployment

PYTHON_IMAGE = "python:3.12-slim"
USER_ID = 10001  # the services run as this user, not root
IGNORED = (".git", ".venv", "venv", "**/__pycache__", "**/*.pyc", ".pytest_cache", ".mypy_cache", ".tox")
WHEELS = "wheels"  # the project's folder holding the namel3ss-celery wheel, by default


def build_paths(out: str) -> tuple[str, str]:
    """Where the image is built from, for files written to the folder ``out`` (relative to the project's
    directory): the project's directory as seen from ``out`` (compose's ``build.context``), and the
    Dockerfile as seen from the project's directory (``docker build -f``). Both relative; a folder outside
    the project is placed from the current directory, taken as the project's.
    """
    folder = PurePosixPath(out)
    if not folder.is_absolute() and ".." not in folder.parts:
        return "/".join([".."] * len(folder.parts)) or ".", str(folder / "Dockerfile")
    here = os.getcwd()
    where = os.path.normpath(os.path.join(here, out))
    return os.path.relpath(here, where), os.path.relpath(os.path.join(where, "Dockerfile"), here)


def requirement(deployment: Deployment) -> str:
    """``namel3ss-celery[extras]==VERSION``: this version (the workers run the version that rendered their
    files), with the broker's client and the events server's packages where the deployment needs them."""
    wanted = ["rabbitmq"] if broker_kind(deployment.broker_url) is Broker.RABBITMQ else []
    wanted += ["events"] if deployment.serve_events else []  # the events server's websockets
    extras = f"[{','.join(wanted)}]" if wanted else ""
    return f"namel3ss-celery{extras}=={version('namel3ss-celery')}"


def render(deployment: Deployment, compose_file: str | None = None) -> dict[str, str]:
    """``{"Dockerfile": text, "Dockerfile.dockerignore": text}``; ``compose_file``: the compose file written
    beside it, which builds the image too (named in the Dockerfile's comment).

    One ``pip install``: the project itself when it is a package (``pyproject.toml`` or ``setup.py``),
    its ``requirements.txt`` when it has one, and namel3ss-celery (``requirement``) from the wheel in
    ``deployment.wheels``. The project's files are in ``workdir``, the services' working directory.
    """
    wheels = deployment.wheels
    build = f"docker build -f {deployment.dockerfile} -t {deployment.image} ."
    building = [f"#   {build}"]
    if compose_file is not None:
        compose = PurePosixPath(deployment.dockerfile).parent / compose_file
        building = [f"#   docker compose -f {compose} up --build", f"#   (the image alone: {build})"]
    lines = [
        f"# {GENERATED}",
        f"# The image of the workers and beat ({deployment.image}). It installs namel3ss-celery from its wheel in",
        f"# {wheels}/ of your project: make the wheel first, from a checkout of namel3ss-celery, then build the",
        "# image from the project's directory:",
        f"#   pip wheel --no-deps --wheel-dir {shlex.quote(wheels)} PATH/TO/namel3ss-celery",
        *building,
        f"FROM {PYTHON_IMAGE}",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"WORKDIR {deployment.workdir}",
        "COPY . .",
        "# The project first when it is a package (a checkout of namel3ss-celery is then the one installed),",
        f"# its requirements.txt, and namel3ss-celery from its wheel in {wheels}/ (pip wheel, above)",
        'RUN set -ef; install=""; \\',
        '    if [ -f pyproject.toml ] || [ -f setup.py ]; then install="."; fi; \\',
        '    if [ -f requirements.txt ]; then install="$install -r requirements.txt"; fi; \\',
        f"    pip install --find-links {shlex.quote(wheels)} $install {shlex.quote(requirement(deployment))}",
        f"RUN useradd --system --no-create-home --uid {USER_ID} celery",
        f"USER {USER_ID}",
        f"ENV PYTHONPATH={deployment.workdir}",
    ]
    ignore = [f"# {GENERATED}", "# What the image's build leaves out of the project's directory.", *IGNORED]
    return {"Dockerfile": "\n".join(lines) + "\n", "Dockerfile.dockerignore": "\n".join(ignore) + "\n"}
