"""Kubernetes manifests: per pool a Deployment and a KEDA ``ScaledObject``, a beat Deployment, and where the
program has event triggers or handlers, the events server's Deployment and Service (its token from the
Secret ``namel3ss-celery-events``: ``kubectl create secret generic namel3ss-celery-events
--from-literal=token=...``).

Here a pool's workers are pods: each runs ``worker_config.concurrency``
processes (default 1) within the limits ``max_cpu_cores`` and
``max_memory_mb``, and KEDA scales the pods between ``min_workers`` and
``max_workers`` on the pool's ``scaling_metric``: the queue's length per
pod (Redis lists or a RabbitMQ queue), or the pods' cpu or memory
utilisation (``target_value`` percent).

On Redis, kombu keeps a queue as ten lists, one per priority: a trigger
reads each, and KEDA's ``scalingModifiers`` (KEDA 2.12 or later) sum them
into the one metric the pool scales on (KEDA would otherwise scale on the
longest list). The pods run the image built from the rendered
``Dockerfile``, in the project's directory inside it.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import RoutingError
from ..routing import Broker, broker_kind, instance_concurrency, redis_priority_lists, stop_timeout
from ..routing.distribution import distribution_of, step_queue
from ..spec import ProgramSpec, ScalingMetric, WorkerPoolSpec
from . import image
from .common import (
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
from .events_server import EVENTS_PORT, SECRET_KEY, SECRET_NAME, TOKEN_ENV, events_command

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z")  # short enough for "namel3ss-celery-worker-"
POOL_LABEL = "namel3ss-celery/pool"
LIST_TRIGGER = "list_{}"  # the trigger of kombu's priority list n, named for the scaling formula


def render(program: ProgramSpec, deployment: Deployment) -> dict[str, str]:
    """The manifests, by file name (``worker-<pool>-deployment.yaml``, ``worker-<pool>-scaledobject.yaml``, ...),
    and the image's ``Dockerfile``.

    Raises:
        RoutingError: a pool name that is no DNS label once lower-cased (``_``
            and ``.`` become ``-``), or two pools that come out the same; a
            broker KEDA cannot watch; a scaling metric the pool lacks limits for.
    """
    files: dict[str, str] = {}
    seen: dict[str, str] = {}
    for pool in deployable_pools(program):
        short = pool.name.lower().replace("_", "-").replace(".", "-")
        if not DNS_LABEL.match(short) or short in seen:
            reason = f"comes out as {seen.get(short)!r} does" if short in seen else "is no DNS label"
            raise RoutingError(f"worker pool {pool.name!r}: as a Kubernetes name, {short!r} {reason}")
        seen[short] = pool.name
        name = f"namel3ss-celery-worker-{short}"
        per_pod = instance_concurrency(pool)
        env = {**worker_environment(program, pool, deployment), **_redis_credentials(deployment.broker_url)}
        container = _container("worker", deployment, worker_command(program, pool, deployment, per_pod), env)
        limits = _limits(pool)
        if limits:
            container["resources"] = {"limits": limits}
        labels = {
            "app.kubernetes.io/name": "namel3ss-celery",
            "app.kubernetes.io/component": "worker",
            POOL_LABEL: short,
        }
        replicas = pool.min_workers if pool.auto_scaling else pool.max_workers
        files[f"worker-{short}-deployment.yaml"] = yaml_text(_deployment(name, labels, replicas, container, pool))
        if pool.auto_scaling:
            files[f"worker-{short}-scaledobject.yaml"] = yaml_text(
                _scaled_object(name, labels, program, pool, deployment.broker_url)
            )
    beat_argv = beat_command(deployment, "/tmp/celerybeat-schedule")
    beat = _container("beat", deployment, beat_argv, service_environment(deployment))
    labels = {"app.kubernetes.io/name": "namel3ss-celery", "app.kubernetes.io/component": "beat"}
    files["beat-deployment.yaml"] = yaml_text(_deployment("namel3ss-celery-beat", labels, 1, beat, None))
    if deployment.serve_events:
        worker = _container(
            "worker", deployment, events_worker_command(program, deployment), service_environment(deployment)
        )
        labels = {"app.kubernetes.io/name": "namel3ss-celery", "app.kubernetes.io/component": "events-worker"}
        matching = _deployment("namel3ss-celery-events-worker", labels, 1, worker, None)
        matching["spec"].pop("strategy")  # stateless: a rolling update is fine
        files["events-worker-deployment.yaml"] = yaml_text(matching)
        files.update(_events_server(deployment))
    return {**files, **image.render(deployment)}


def _events_server(deployment: Deployment) -> dict[str, str]:
    """The events server's Deployment (its token from the Secret ``namel3ss-celery-events``) and Service."""
    name = "namel3ss-celery-events"
    container = _container("events", deployment, events_command(deployment), service_environment(deployment))
    secret = {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}
    container["env"].append({"name": TOKEN_ENV, "valueFrom": secret})
    container["ports"] = [{"name": "events", "containerPort": EVENTS_PORT}]
    labels = {"app.kubernetes.io/name": "namel3ss-celery", "app.kubernetes.io/component": "events"}
    server = _deployment(name, labels, 1, container, None)
    server["spec"].pop("strategy")  # stateless: a rolling update is fine
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {"selector": dict(labels), "ports": [{"name": "events", "port": EVENTS_PORT, "targetPort": "events"}]},
    }
    return {"events-deployment.yaml": yaml_text(server), "events-service.yaml": yaml_text(service)}


def _container(name: str, deployment: Deployment, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": deployment.image,
        "imagePullPolicy": "IfNotPresent",  # an image built on the node, or pulled once per tag
        "workingDir": deployment.workdir,
        "command": [word.replace("$(", "$$(") for word in argv],
        "env": [{"name": key, "value": value.replace("$(", "$$(")} for key, value in env.items()],
    }


def _scaled_object(
    name: str, labels: dict[str, str], program: ProgramSpec, pool: WorkerPoolSpec, broker_url: str
) -> dict[str, Any]:
    triggers = _triggers(program, pool, broker_url)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": name},
        "minReplicaCount": pool.min_workers,
        "maxReplicaCount": pool.max_workers,
    }
    if len(triggers) > 1:  # the priority lists of one Redis queue: scale on their sum
        spec["advanced"] = {
            "scalingModifiers": {
                "formula": " + ".join(trigger["name"] for trigger in triggers),
                "target": str(math.ceil(pool.target_value)),
                "metricType": "AverageValue",
            }
        }
    spec["triggers"] = triggers
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": spec,
    }


def _deployment(
    name: str, labels: dict[str, str], replicas: int, container: dict[str, Any], pool: WorkerPoolSpec | None
) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [container]}
    stop = stop_timeout(pool) if pool is not None else None
    if stop is not None:
        pod["terminationGracePeriodSeconds"] = math.ceil(stop)
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": dict(labels)}}
    if pool is None:
        spec["strategy"] = {"type": "Recreate"}  # never two beats at once
    spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": spec,
    }


def _limits(pool: WorkerPoolSpec) -> dict[str, str]:
    limits: dict[str, str] = {}
    if pool.max_cpu_cores is not None:
        limits["cpu"] = f"{round(pool.max_cpu_cores * 1000)}m"
    if pool.max_memory_mb is not None:
        limits["memory"] = f"{pool.max_memory_mb}Mi"
    return limits


def _triggers(program: ProgramSpec, pool: WorkerPoolSpec, broker_url: str) -> list[dict[str, Any]]:
    if pool.target_value <= 0:
        raise RoutingError(f"worker pool {pool.name!r}: target_value must be above 0 (got {pool.target_value})")
    target = str(math.ceil(pool.target_value))
    if pool.scaling_metric != ScalingMetric.QUEUE_DEPTH:
        metric = str(pool.scaling_metric)
        limit = pool.max_cpu_cores if metric == "cpu" else pool.max_memory_mb
        if limit is None or pool.min_workers == 0:
            field = "max_cpu_cores" if metric == "cpu" else "max_memory_mb"
            raise RoutingError(
                f"worker pool {pool.name!r}: scaling on {metric} needs {field} (utilisation is measured against it) "
                f"and min_workers of at least 1 (a {metric} trigger cannot wake a pool from zero)"
            )
        return [{"type": metric, "metricType": "Utilization", "metadata": {"value": target}}]
    queue = step_queue(distribution_of(program, pool.name), pool)  # under locality_aware, the region's queue
    if broker_kind(broker_url) is Broker.RABBITMQ:
        if urlsplit(broker_url).scheme not in ("amqp", "amqps"):
            raise RoutingError(f"KEDA's rabbitmq scaler reads amqp:// or amqps:// URLs, not {broker_url!r}")
        metadata = {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": target}
        return [{"type": "rabbitmq", "metadata": {**metadata, "hostFromEnv": BROKER_ENV}}]
    address = _redis_address(broker_url)
    # kombu keeps priority n > 0 in a list of its own: one trigger per list, summed by scalingModifiers
    return [
        {
            "type": "redis",
            "name": LIST_TRIGGER.format(step),
            "metadata": {**address, "listName": name, "listLength": target},
        }
        for step, name in enumerate(redis_priority_lists(queue))
    ]


def _redis_address(broker_url: str) -> dict[str, str]:
    """KEDA's redis scaler settings for a ``redis://`` or ``rediss://`` broker URL."""
    url = urlsplit(broker_url)
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise RoutingError(f"KEDA's redis scaler needs a redis://host:port or rediss:// broker URL, not {broker_url!r}")
    address = {"address": f"{url.hostname}:{url.port or 6379}", "databaseIndex": url.path.strip("/") or "0"}
    if url.scheme == "rediss":
        address["enableTLS"] = "true"
    for env in _redis_credentials(broker_url):
        address[f"{env[6:].lower()}FromEnv"] = env  # usernameFromEnv, passwordFromEnv
    return address


def _redis_credentials(broker_url: str) -> dict[str, str]:
    """``REDIS_USERNAME``/``REDIS_PASSWORD`` from a Redis broker URL, for KEDA to read from the pods' environment."""
    if broker_kind(broker_url) is not Broker.REDIS:
        return {}
    url = urlsplit(broker_url)
    found = {"REDIS_USERNAME": url.username, "REDIS_PASSWORD": url.password}
    return {name: unquote(value) for name, value in found.items() if value}
