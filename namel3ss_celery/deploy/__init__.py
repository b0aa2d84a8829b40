"""Deployment files from a program's worker pools: systemd units, a compose file, Kubernetes manifests with KEDA.

Besides the workers, each target runs one beat (``namel3ss-celery beat``: the program's schedules and the
app's own entries; one per deployment, never more), and, where the program has event triggers or handlers,
the events server (``namel3ss-celery events --serve``, behind a token: see ``events_server``).

Every target runs the same worker command per pool (``routing.worker_argv``)
with the same settings (broker, result backend, step modules, program file,
project directory) against one broker; compose and Kubernetes get a
Dockerfile for the image they run. The files are plain text to write,
review and commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from ..errors import ConfigurationError
from ..routing import Broker, broker_kind, pool_queues, transport_options
from ..spec import ProgramSpec
from ..spec.enums import StrEnum
from . import compose, kubernetes, systemd
from .common import Deployment, under
from .events_server import serves_events
from .image import WHEELS, build_paths

DEFAULT_APP = "namel3ss_celery"
DEFAULT_BROKER_URL = "redis://redis:6379/0"
DEFAULT_PROGRAM_PATH = "program.yaml"  # the program file, relative to the project's directory
DEFAULT_IMAGE = "namel3ss-celery-app:latest"  # built from the rendered Dockerfile
COMPOSE_BACKEND = "redis://redis:6379/1"  # the compose file's own Redis, beside a RabbitMQ broker
CONTAINER_WORKDIR = "/app"  # where the Dockerfile puts the project
HOST_WORKDIR = "/srv/namel3ss-celery"  # where systemd units expect the project
LOCAL_BACKENDS = frozenset({"memory", "cache+memory", "disabled"})  # results no other process can read


class Target(StrEnum):
    """Where the files are for."""

    SYSTEMD = "systemd"
    COMPOSE = "compose"
    KUBERNETES = "kubernetes"


Renderer = Callable[[ProgramSpec, Deployment], dict[str, str]]

RENDERERS: dict[Target, Renderer] = {
    Target.SYSTEMD: systemd.render,
    Target.COMPOSE: compose.render,
    Target.KUBERNETES: kubernetes.render,
}


def render(
    program: ProgramSpec,
    target: str,
    app: str = DEFAULT_APP,
    broker_url: str = DEFAULT_BROKER_URL,
    program_path: str = DEFAULT_PROGRAM_PATH,
    *,
    result_backend: str | None = None,
    step_modules: Sequence[str] = (),
    workdir: str | None = None,
    image: str = DEFAULT_IMAGE,
    venv: str | None = None,
    out: str | None = None,
    wheels: str = WHEELS,
) -> dict[str, str]:
    """The deployment files of ``program`` for ``target``, by file name.

    Args:
        program: the program whose ``worker_pools`` (and ``task_queues``) to deploy.
        target: ``systemd``, ``compose`` or ``kubernetes``.
        app: the Celery app for ``celery -A`` (the user's project, or the default app).
        broker_url: the broker every service uses (Redis or RabbitMQ, never memory).
        program_path: the program file (``NAMEL3SS_CELERY_PROGRAM``), absolute or relative to ``workdir``.
        result_backend: where workers keep results; by default the broker, when it is Redis (on RabbitMQ,
            compose uses its own Redis service and the other targets need one given).
        step_modules: modules of steps, reducers and executors the workers import
            (``NAMEL3SS_CELERY_STEP_MODULES``); the default app needs at least one.
        workdir: the project's directory where the services run, absolute: ``/app`` in the image
            (compose, Kubernetes), ``/srv/namel3ss-celery`` on a host (systemd).
        image: the image compose and Kubernetes run, built from the rendered ``Dockerfile``.
        venv: systemd: the virtual environment holding ``bin/celery`` (default ``<workdir>/.venv``).
        out: the folder the files are written to, relative to the project's directory (default
            ``deploy/<program name>/<target>``): compose builds the image from the project's directory with
            the Dockerfile written there.
        wheels: the project's folder holding the namel3ss-celery wheel the image installs
            (``pip wheel --no-deps --wheel-dir wheels PATH/TO/namel3ss-celery``), relative.

    Returns:
        ``{file name: text}``, in a stable order.

    Raises:
        ConfigurationError: an unknown target (``setting="target"``), an in-memory broker or backend
            (``broker_url``, ``result_backend``), no result backend for an AMQP broker
            (``result_backend``), the default app without step modules (``step_modules``), a
            relative ``workdir`` or ``venv``, or a ``wheels`` folder outside the project.
        RoutingError: the pools and queues cannot run as asked (conflicting
            visibility timeouts, ``exactly_once``, autoscaling a threads pool, ...).
    """
    try:
        chosen = Target(target)
    except ValueError as exc:
        choices = ", ".join(t.value for t in Target)
        raise ConfigurationError(f"unknown deploy target {target!r}; choose one of: {choices}", "target") from exc
    if broker_kind(broker_url) is Broker.MEMORY:
        raise ConfigurationError(
            f"broker {broker_url!r} lives inside one process; deployed workers need a redis:// or amqp:// broker",
            "broker_url",
        )
    backend = _result_backend(chosen, broker_url, result_backend)
    if app == DEFAULT_APP and not step_modules:
        raise ConfigurationError(
            "the default app's workers find steps only in step modules (NAMEL3SS_CELERY_STEP_MODULES): "
            "give --steps MODULE (repeatable), or -A your app that imports its steps",
            "step_modules",
        )
    folder = workdir or (HOST_WORKDIR if chosen is Target.SYSTEMD else CONTAINER_WORKDIR)
    _absolute(folder, "workdir")
    if chosen is Target.SYSTEMD:
        environment = venv or under(folder, ".venv")
        _absolute(environment, "venv")
        celery, namel3ss = under(environment, "bin/celery"), under(environment, "bin/namel3ss-celery")
    else:
        celery, namel3ss = "celery", "namel3ss-celery"  # on the image's PATH, where pip installed them
    wheel_folder = PurePosixPath(wheels)
    if wheel_folder.is_absolute() or ".." in wheel_folder.parts or not wheels.strip():
        raise ConfigurationError(
            f"--wheels {wheels!r}: the image finds the namel3ss-celery wheel in a folder of the project (the "
            "build context), so give it relative to the project's directory",
            "wheels",
        )
    context, dockerfile = build_paths(out or f"deploy/{program.name or 'program'}/{chosen.value}")
    pool_queues(program)  # refuses task queues no pool reads, and dead-letter loops
    transport_options(program, broker_url)  # refuses visibility timeouts that disagree
    deployment = Deployment(
        app=app,
        broker_url=broker_url,
        result_backend=backend,
        program_path=under(folder, program_path),
        step_modules=tuple(dict.fromkeys(step_modules)),
        workdir=folder,
        image=image,
        celery=celery,
        namel3ss=namel3ss,
        serve_events=serves_events(program),
        context=context,
        dockerfile=dockerfile,
        wheels=str(wheel_folder),
    )
    return RENDERERS[chosen](program, deployment)


def _result_backend(target: Target, broker_url: str, asked: str | None) -> str:
    if asked is not None:
        if asked.split("://", 1)[0].lower() in LOCAL_BACKENDS or not asked.strip():
            raise ConfigurationError(
                f"result backend {asked!r} cannot be shared by deployed workers; give a redis:// URL",
                "result_backend",
            )
        return asked
    if broker_kind(broker_url) is Broker.REDIS:
        return broker_url
    if target is Target.COMPOSE:
        return COMPOSE_BACKEND
    raise ConfigurationError(
        f"broker {broker_url!r} keeps no results: give --backend redis://HOST:6379/1 (results, and the "
        f"coordination store of blocks and workflows)",
        "result_backend",
    )


def _absolute(path: str, setting: str) -> None:
    if not PurePosixPath(path).is_absolute():
        raise ConfigurationError(f"--{setting} {path!r}: the services need an absolute path", setting)


__all__ = [
    "DEFAULT_APP",
    "DEFAULT_BROKER_URL",
    "DEFAULT_IMAGE",
    "DEFAULT_PROGRAM_PATH",
    "RENDERERS",
    "Deployment",
    "Target",
    "render",
]
