"""Deployment files from a program's worker pools: systemd units, a compose file, Kubernetes manifests with KEDA.

Every target runs the same worker command per pool (``routing.worker_argv``)
against one broker; the files are plain text to write, review and commit.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigurationError
from ..routing import Broker, broker_kind, pool_queues, transport_options
from ..spec import ProgramSpec
from ..spec.enums import StrEnum
from . import compose, kubernetes, systemd

DEFAULT_APP = "namel3ss_celery"
DEFAULT_BROKER_URL = "redis://redis:6379/0"
DEFAULT_PROGRAM_PATH = "program.yaml"  # the program file, where the workers run


class Target(StrEnum):
    """Where the files are for."""

    SYSTEMD = "systemd"
    COMPOSE = "compose"
    KUBERNETES = "kubernetes"


Renderer = Callable[[ProgramSpec, str, str, str], dict[str, str]]

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
) -> dict[str, str]:
    """The deployment files of ``program`` for ``target``, by file name.

    Args:
        program: the program whose ``worker_pools`` (and ``task_queues``) to deploy.
        target: ``systemd``, ``compose`` or ``kubernetes``.
        app: the Celery app for ``celery -A`` (the user's project, or the default app).
        broker_url: the broker every service uses (Redis or RabbitMQ, never memory).
        program_path: where the workers find the program file (``NAMEL3SS_CELERY_PROGRAM``), relative
            to their working directory or absolute.

    Returns:
        ``{file name: text}``, in a stable order.

    Raises:
        ConfigurationError: an unknown target (``setting="target"``), or an
            in-memory broker (``setting="broker_url"``).
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
    pool_queues(program)  # refuses task queues no pool reads, and dead-letter loops
    transport_options(program, broker_url)  # refuses visibility timeouts that disagree
    return RENDERERS[chosen](program, app, broker_url, program_path)


__all__ = ["DEFAULT_APP", "DEFAULT_BROKER_URL", "DEFAULT_PROGRAM_PATH", "RENDERERS", "Target", "render"]
