"""Kubernetes: a Deployment per pool, KEDA ScaledObjects on the pool's queue or utilisation, a beat Deployment."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from namel3ss_celery.errors import RoutingError
from namel3ss_celery.routing import redis_priority_lists

from .pools import CPU, IO, program, rendered


def manifests(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The YAML manifests among the rendered files (not the Dockerfile), parsed."""
    return {name: yaml.safe_load(text) for name, text in files.items() if name.endswith(".yaml")}


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_kubernetes_manifests_on_redis() -> None:
    files = rendered(program(), "kubernetes", broker_url="redis://redis.infra:6380/3", image="reg.example/proj:1.2")
    docs = manifests(files)
    assert list(files) == [
        "worker-cpu-deployment.yaml",
        "worker-cpu-scaledobject.yaml",
        "worker-io-deployment.yaml",
        "beat-deployment.yaml",
        "Dockerfile",
        "Dockerfile.dockerignore",
    ]
    cpu = docs["worker-cpu-deployment.yaml"]
    assert (cpu["apiVersion"], cpu["kind"], cpu["metadata"]["name"]) == (
        "apps/v1",
        "Deployment",
        "namel3ss-celery-worker-cpu",
    )
    assert cpu["spec"]["selector"]["matchLabels"] == cpu["spec"]["template"]["metadata"]["labels"]
    pod = cpu["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert (container["image"], container["imagePullPolicy"]) == ("reg.example/proj:1.2", "IfNotPresent")
    assert container["workingDir"] == "/app"  # where the rendered Dockerfile puts the project
    assert container["command"] == [
        "celery",
        "-A",
        "namel3ss_celery",
        "worker",
        "-Q",
        "cpu_q",
        "-n",
        "cpu@%h",
        "--prefetch-multiplier=1",
        "--concurrency=1",
        "--max-memory-per-child=524288",
        "--soft-time-limit=60",
        "--time-limit=70",
    ]  # KEDA scales the pods, so no --autoscale inside them
    assert container["resources"] == {"limits": {"cpu": "1500m", "memory": "512Mi"}}
    assert container["env"] == [
        {"name": "CELERY_BROKER_URL", "value": "redis://redis.infra:6380/3"},
        {"name": "CELERY_RESULT_BACKEND", "value": "redis://redis.infra:6380/3"},  # by default, the Redis broker
        {"name": "NAMEL3SS_CELERY_STEP_MODULES", "value": "proj.steps,proj.more_steps"},
        {"name": "NAMEL3SS_CELERY_PROGRAM", "value": "/app/program.yaml"},
        {"name": "PYTHONPATH", "value": "/app"},  # the step modules import from the project's directory
        {"name": "NAMEL3SS_CELERY_POOL", "value": "cpu"},  # the worker applies the pool's contract and targets
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "PRICE", "value": "5$ 100%"},
    ]
    assert pod["terminationGracePeriodSeconds"] == 80
    scaled = docs["worker-cpu-scaledobject.yaml"]
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "namel3ss-celery-worker-cpu"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 6)
    names = [f"list_{n}" for n in range(10)]
    assert [t["type"] for t in spec["triggers"]] == ["redis"] * 10
    assert [t["name"] for t in spec["triggers"]] == names
    assert [t["metadata"]["listName"] for t in spec["triggers"]] == redis_priority_lists("cpu_q")
    assert spec["triggers"][1]["metadata"]["listName"] == "cpu_q\x06\x161"
    for trigger in spec["triggers"]:
        assert {k: v for k, v in trigger["metadata"].items() if k != "listName"} == {
            "address": "redis.infra:6380",
            "databaseIndex": "3",
            "listLength": "3",
        }
    # one signal: every message of the queue, over its ten priority lists, per pod
    assert spec["advanced"] == {
        "scalingModifiers": {"formula": " + ".join(names), "target": "3", "metricType": "AverageValue"}
    }
    io = docs["worker-io-deployment.yaml"]
    assert io["spec"]["replicas"] == 3  # no autoscaling: max_workers pods, no ScaledObject
    assert io["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--pool=threads", "--concurrency=12"]
    assert "resources" not in io["spec"]["template"]["spec"]["containers"][0]
    beat = docs["beat-deployment.yaml"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    assert beat["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "namel3ss-celery",
        "beat",
        "-A",
        "namel3ss_celery",
        "--program",
        "/app/program.yaml",
        "--schedule=/tmp/celerybeat-schedule",
    ]
    assert container_env(beat) == {  # beat reads the program's schedules and triggers
        "CELERY_BROKER_URL": "redis://redis.infra:6380/3",
        "CELERY_RESULT_BACKEND": "redis://redis.infra:6380/3",
        "NAMEL3SS_CELERY_STEP_MODULES": "proj.steps,proj.more_steps",
        "NAMEL3SS_CELERY_PROGRAM": "/app/program.yaml",
        "PYTHONPATH": "/app",
    }


def test_kubernetes_escapes_what_kubernetes_would_expand() -> None:
    spec = program({**CPU, "environment_variables": {"TOKEN": "$(SECRET)"}})
    docs = manifests(rendered(spec, "kubernetes", workdir="/srv/$(app)"))
    deployment = docs["worker-cpu-deployment.yaml"]
    assert container_env(deployment)["TOKEN"] == "$$(SECRET)"
    assert container_env(deployment)["NAMEL3SS_CELERY_PROGRAM"] == "/srv/$$(app)/program.yaml"


def test_kubernetes_on_rabbitmq_scales_on_the_queue_length() -> None:
    files = rendered(
        program(CPU), "kubernetes", broker_url="amqp://u:p@rabbit:5672/vhost", result_backend="redis://r:6379/1"
    )
    docs = manifests(files)
    assert "advanced" not in docs["worker-cpu-scaledobject.yaml"]["spec"]  # one queue: one trigger
    assert container_env(docs["worker-cpu-deployment.yaml"])["CELERY_RESULT_BACKEND"] == "redis://r:6379/1"
    [trigger] = docs["worker-cpu-scaledobject.yaml"]["spec"]["triggers"]
    assert trigger == {
        "type": "rabbitmq",
        "metadata": {
            "protocol": "amqp",
            "queueName": "cpu_q",
            "mode": "QueueLength",
            "value": "3",
            "hostFromEnv": "CELERY_BROKER_URL",
        },
    }


def test_kubernetes_reads_redis_credentials_from_the_pods_environment() -> None:
    docs = manifests(rendered(program(CPU), "kubernetes", broker_url="rediss://user:s%40cret@r:6379/0"))
    metadata = docs["worker-cpu-scaledobject.yaml"]["spec"]["triggers"][0]["metadata"]
    assert metadata["usernameFromEnv"] == "REDIS_USERNAME" and metadata["passwordFromEnv"] == "REDIS_PASSWORD"
    assert metadata["enableTLS"] == "true"
    env = {
        e["name"]: e["value"]
        for e in docs["worker-cpu-deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["REDIS_USERNAME"] == "user" and env["REDIS_PASSWORD"] == "s@cret"


@pytest.mark.parametrize("metric", ["cpu", "memory"])
def test_kubernetes_scales_on_utilisation(metric: str) -> None:
    docs = manifests(rendered(program({**CPU, "scaling_metric": metric, "target_value": 70}), "kubernetes"))
    assert docs["worker-cpu-scaledobject.yaml"]["spec"]["triggers"] == [
        {"type": metric, "metricType": "Utilization", "metadata": {"value": "70"}}
    ]


@pytest.mark.parametrize(
    ("pool", "broker", "message"),
    [
        ({**CPU, "name": "Big_Pool"}, "redis://r/0", None),
        ({**CPU, "name": "-x"}, "redis://r/0", "'-x'"),
        ({**CPU, "scaling_metric": "cpu", "max_cpu_cores": None}, "redis://r/0", "scaling on cpu needs max_cpu_cores"),
        ({**CPU, "scaling_metric": "memory", "min_workers": 0}, "redis://r/0", "cannot wake a pool from zero"),
        ({**CPU, "target_value": 0}, "redis://r/0", "target_value must be above 0"),
        (CPU, "pyamqp://rabbit//", "reads amqp:// or amqps:// URLs"),
        (CPU, "sentinel://s:26379", "needs a redis://host:port"),
    ],
)
def test_kubernetes_refuses_what_it_cannot_express(pool: dict[str, Any], broker: str, message: str | None) -> None:
    if message is None:  # a name that becomes a DNS label is fine
        assert "worker-big-pool-deployment.yaml" in rendered(program(pool), "kubernetes", broker_url=broker)
        return
    with pytest.raises(RoutingError, match=message):
        rendered(program(pool), "kubernetes", broker_url=broker, result_backend="redis://r:6379/1")


def test_kubernetes_refuses_two_pools_with_one_name() -> None:
    with pytest.raises(RoutingError, match="'a.b': as a Kubernetes name, 'a-b' comes out as 'a_b' does"):
        rendered(program({**CPU, "name": "a_b"}, {**IO, "name": "a.b"}), "kubernetes")
