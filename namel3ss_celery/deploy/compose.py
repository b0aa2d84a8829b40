"""A ``compose.yaml`` for a laptop cluster: the brokers, one worker service per pool, beat and Flower."""

from __future__ import annotations

from typing import Any

from ..routing import Broker, broker_kind, stop_timeout
from ..routing.policy import seconds_text
from ..spec import ProgramSpec
from .common import (
    BROKER_ENV,
    IMAGE,
    beat_command,
    beat_environment,
    deployable_pools,
    worker_command,
    worker_environment,
    yaml_text,
)

REDIS_IMAGE = "redis:7-alpine"
RABBITMQ_IMAGE = "rabbitmq:3-management"
FLOWER_IMAGE = "mher/flower:2.0"
RESULT_BACKEND = "redis://redis:6379/1"  # the compose file's own Redis keeps results and coordination
FLOWER_PORT = 5555
FLOWER_AUTH = "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH to user:password to start Flower}"


def render(program: ProgramSpec, app: str, broker_url: str, program_path: str) -> dict[str, str]:
    """``{"compose.yaml": text}``.

    A ``redis`` service always runs (result backend and coordination store);
    a ``rabbitmq`` one too when the broker is AMQP (point ``broker_url`` at
    host ``rabbitmq``). Flower asks for basic auth from ``FLOWER_BASIC_AUTH``
    and compose refuses to start it while that is unset.

    Raises:
        RoutingError: a pool cannot run as asked (see ``worker_argv``).
    """
    brokers: dict[str, Any] = {"redis": _healthy(REDIS_IMAGE, ["CMD", "redis-cli", "ping"])}
    if broker_kind(broker_url) is Broker.RABBITMQ:
        brokers["rabbitmq"] = _healthy(RABBITMQ_IMAGE, ["CMD", "rabbitmq-diagnostics", "-q", "ping"])
    services: dict[str, Any] = dict(brokers)
    for pool in deployable_pools(program):
        service = _celery_service(brokers, worker_environment(program, pool, broker_url, program_path))
        service["command"] = worker_command(program, pool, app, broker_url)
        stop = stop_timeout(pool)
        if stop is not None:
            service["stop_grace_period"] = f"{seconds_text(stop)}s"
        services[f"worker-{pool.name}"] = service
    services["beat"] = _celery_service(brokers, beat_environment(broker_url, program_path))  # one beat, never scaled
    services["beat"]["command"] = beat_command(app, "/tmp/celerybeat-schedule")
    flower = _celery_service(brokers, {BROKER_ENV: broker_url})
    flower["image"] = FLOWER_IMAGE
    flower["command"] = ["celery", "flower", f"--port={FLOWER_PORT}"]
    flower["environment"]["FLOWER_BASIC_AUTH"] = FLOWER_AUTH
    flower["ports"] = [f"{FLOWER_PORT}:{FLOWER_PORT}"]
    services["flower"] = flower
    return {"compose.yaml": yaml_text({"services": services})}


def _healthy(image: str, test: list[str]) -> dict[str, Any]:
    return {"image": image, "healthcheck": {"test": test, "interval": "5s", "timeout": "5s", "retries": 20}}


def _celery_service(brokers: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    environment = {name: _literal(value) for name, value in env.items()}
    environment.setdefault("CELERY_RESULT_BACKEND", RESULT_BACKEND)
    return {
        "image": IMAGE,
        "command": [],
        "environment": environment,
        "depends_on": {name: {"condition": "service_healthy"} for name in brokers},
        "restart": "unless-stopped",
    }


def _literal(value: str) -> str:
    """A value compose must not interpolate: ``$`` doubled."""
    return value.replace("$", "$$")
