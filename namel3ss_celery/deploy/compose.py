"""A ``compose.yaml`` for a laptop cluster: the brokers, one worker service per pool, beat, the events server
(where the program has event triggers or handlers) and Flower.

The Celery services run the image built from the rendered ``Dockerfile``, in
the project's directory inside it; each carries the ``build`` that makes it
(the project's directory as context, that Dockerfile), so ``docker compose up
--build`` builds it first.
"""

from __future__ import annotations

from typing import Any

from ..routing import Broker, broker_kind, stop_timeout
from ..routing.policy import seconds_text
from ..spec import ProgramSpec
from . import image
from .common import (
    BACKEND_ENV,
    BROKER_ENV,
    Deployment,
    beat_command,
    deployable_pools,
    events_worker_command,
    service_environment,
    worker_command,
    worker_environment,
    yaml_text,
)
from .events_server import EVENTS_PORT, TOKEN_ENV, events_command

REDIS_IMAGE = "redis:7-alpine"
RABBITMQ_IMAGE = "rabbitmq:3-management"
FLOWER_IMAGE = "mher/flower:2.0"
FLOWER_PORT = 5555
FLOWER_AUTH = "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH to user:password to start Flower}"
EVENTS_TOKEN = f"${{{TOKEN_ENV}:?set {TOKEN_ENV} to the token clients of the events server send}}"


def render(program: ProgramSpec, deployment: Deployment) -> dict[str, str]:
    """``{"compose.yaml": text}`` and the image's ``Dockerfile``.

    A ``redis`` service always runs (result backend and coordination store);
    a ``rabbitmq`` one too when the broker is AMQP (point ``broker_url`` at
    host ``rabbitmq``). Flower asks for basic auth from ``FLOWER_BASIC_AUTH``
    and compose refuses to start it while that is unset. The ``events`` service
    (the program has event triggers or handlers) serves the event stream on port
    8765 to clients sending the token of ``NAMEL3SS_CELERY_EVENTS_TOKEN``, which
    compose asks for the same way.

    Raises:
        RoutingError: a pool cannot run as asked (see ``worker_argv``).
    """
    brokers: dict[str, Any] = {"redis": _healthy(REDIS_IMAGE, ["CMD", "redis-cli", "ping"])}
    if broker_kind(deployment.broker_url) is Broker.RABBITMQ:
        brokers["rabbitmq"] = _healthy(RABBITMQ_IMAGE, ["CMD", "rabbitmq-diagnostics", "-q", "ping"])
    services: dict[str, Any] = dict(brokers)
    for pool in deployable_pools(program):
        service = _celery_service(brokers, deployment, worker_environment(program, pool, deployment))
        service["command"] = [_literal(word) for word in worker_command(program, pool, deployment)]
        stop = stop_timeout(pool)
        if stop is not None:
            service["stop_grace_period"] = f"{seconds_text(stop)}s"
        services[f"worker-{pool.name}"] = service
    services["beat"] = _celery_service(brokers, deployment, service_environment(deployment))
    services["beat"]["command"] = [_literal(word) for word in beat_command(deployment, "/tmp/celerybeat-schedule")]
    if deployment.serve_events:
        matching = _celery_service(brokers, deployment, service_environment(deployment))
        matching["command"] = [_literal(word) for word in events_worker_command(program, deployment)]
        services["events-worker"] = matching
        events = _celery_service(brokers, deployment, service_environment(deployment))
        events["command"] = [_literal(word) for word in events_command(deployment)]
        events["environment"][TOKEN_ENV] = EVENTS_TOKEN
        events["ports"] = [f"{EVENTS_PORT}:{EVENTS_PORT}"]
        services["events"] = events
    flower = _celery_service(brokers, deployment, {})
    flower["image"] = FLOWER_IMAGE
    del flower["build"], flower["working_dir"]
    flower["command"] = ["celery", "flower", f"--port={FLOWER_PORT}"]
    flower["environment"] = {
        BROKER_ENV: _literal(deployment.broker_url),
        BACKEND_ENV: _literal(deployment.result_backend),
        "FLOWER_BASIC_AUTH": FLOWER_AUTH,
    }
    flower["ports"] = [f"{FLOWER_PORT}:{FLOWER_PORT}"]
    services["flower"] = flower
    return {"compose.yaml": yaml_text({"services": services}), **image.render(deployment, "compose.yaml")}


def _healthy(image_name: str, test: list[str]) -> dict[str, Any]:
    return {"image": image_name, "healthcheck": {"test": test, "interval": "5s", "timeout": "5s", "retries": 20}}


def _celery_service(brokers: dict[str, Any], deployment: Deployment, env: dict[str, str]) -> dict[str, Any]:
    return {
        "image": deployment.image,
        "build": {"context": _literal(deployment.context), "dockerfile": _literal(deployment.dockerfile)},
        "working_dir": deployment.workdir,
        "command": [],
        "environment": {name: _literal(value) for name, value in env.items()},
        "depends_on": {name: {"condition": "service_healthy"} for name in brokers},
        "restart": "unless-stopped",
    }


def _literal(value: str) -> str:
    """A value compose must not interpolate: ``$`` doubled."""
    return value.replace("$", "$$")
