"""The image compose and Kubernetes run: a ``Dockerfile`` for the user's project, and what the build leaves out.

The build context is the project's root directory (where the program file
and the step modules are); the Dockerfile may live anywhere, as the rendered
one does under ``deploy/``, and BuildKit reads ``Dockerfile.dockerignore``
beside it.
"""

from __future__ import annotations

from importlib.metadata import version

from ..routing import Broker, broker_kind
from .common import GENERATED, Deployment

PYTHON_IMAGE = "python:3.12-slim"
USER_ID = 10001  # the services run as this user, not root
IGNORED = (".git", ".venv", "venv", "**/__pycache__", "**/*.pyc", ".pytest_cache", ".mypy_cache", ".tox")


def render(deployment: Deployment) -> dict[str, str]:
    """``{"Dockerfile": text, "Dockerfile.dockerignore": text}``.

    One ``pip install`` of namel3ss-celery (this version, with the broker's
    client), the project's ``requirements.txt`` when it has one, and the
    project itself when it is a package (``pyproject.toml`` or ``setup.py``).
    The project's files are in ``workdir``, the services' working directory.
    """
    pinned = version("namel3ss-celery")  # the workers run the version that rendered their files
    wanted = ["rabbitmq"] if broker_kind(deployment.broker_url) is Broker.RABBITMQ else []
    wanted += ["events"] if deployment.serve_events else []  # the events server's websockets
    extras = f"[{','.join(wanted)}]" if wanted else ""
    lines = [
        f"# {GENERATED}",
        f"# The image of the workers and beat ({deployment.image}). Build it from your project's root directory,",
        "# the one that holds the program file and the step modules, naming this file with -f:",
        f"#   docker build -f path/to/this/Dockerfile -t {deployment.image} .",
        f"FROM {PYTHON_IMAGE}",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"WORKDIR {deployment.workdir}",
        "COPY . .",
        "# namel3ss-celery, the project's requirements.txt, and the project itself when it is a package",
        f'RUN set -ef; install="namel3ss-celery{extras}=={pinned}"; \\',
        '    if [ -f requirements.txt ]; then install="$install -r requirements.txt"; fi; \\',
        '    if [ -f pyproject.toml ] || [ -f setup.py ]; then install="$install ."; fi; \\',
        "    pip install $install",
        f"RUN useradd --system --no-create-home --uid {USER_ID} celery",
        f"USER {USER_ID}",
        f"ENV PYTHONPATH={deployment.workdir}",
    ]
    ignore = [f"# {GENERATED}", "# What the image's build leaves out of the project's directory.", *IGNORED]
    return {"Dockerfile": "\n".join(lines) + "\n", "Dockerfile.dockerignore": "\n".join(ignore) + "\n"}
