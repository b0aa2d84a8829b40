"""The rendered manifests against the Kubernetes and KEDA schemas, offline.

Deployments: the Kubernetes API's own JSON schemas, shipped for every minor
version by the ``kubernetes-validate`` package, strict (a field Kubernetes
does not know is an error, not silently dropped), for the oldest and newest
versions it ships. ScaledObjects: ``SCALED_OBJECT`` below, written from the
``openAPIV3Schema`` of KEDA's CRD (``keda.sh_scaledobjects.yaml``, v1alpha1,
KEDA 2.12 to 2.17: the releases with ``scalingModifiers``). Kubernetes prunes
the fields a CRD's structural schema does not declare, so every object is
closed here (``additionalProperties: false``), and KEDA's admission checks of
a scaling formula are checked after the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from .pools import CPU, IO, program, rendered

KUBERNETES_VERSIONS = sorted(
    {version.rsplit(".", 1)[0] for version in all_versions()}, key=lambda v: tuple(map(int, v.split(".")))
)
CHECKED_VERSIONS = [KUBERNETES_VERSIONS[0], KUBERNETES_VERSIONS[-1]]

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


TRIGGER = closed(
    {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "metadata": STRINGS,
        "metricType": {"type": "string"},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": closed(
            {"name": {"type": "string"}, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
            ("name",),
        ),
    },
    ("metadata", "type"),
)
SCALED_OBJECT: dict[str, Any] = closed(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": closed({"name": {"type": "string", "minLength": 1}, "labels": STRINGS}, ("name",)),
        "spec": closed(
            {
                "scaleTargetRef": closed(
                    {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "envSourceContainerName": {"type": "string"},
                    },
                    ("name",),
                ),
                "pollingInterval": {**INT32, "minimum": 1},
                "initialCooldownPeriod": {**INT32, "minimum": 0},
                "cooldownPeriod": {**INT32, "minimum": 0},
                "idleReplicaCount": {**INT32, "minimum": 0},
                "minReplicaCount": {**INT32, "minimum": 0},
                "maxReplicaCount": {**INT32, "minimum": 1},
                "fallback": closed(
                    {"failureThreshold": {**INT32, "minimum": 0}, "replicas": {**INT32, "minimum": 0}},
                    ("failureThreshold", "replicas"),
                ),
                "advanced": closed(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": closed(
                            {"name": {"type": "string"}, "behavior": {"type": "object"}}
                        ),
                        "scalingModifiers": closed(
                            {
                                "formula": {"type": "string"},
                                "target": {"type": "string"},
                                "activationTarget": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value"]},
                            }
                        ),
                    }
                ),
                "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
            },
            ("scaleTargetRef", "triggers"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
# What each scaler reads from a trigger's metadata (KEDA's redis and rabbitmq scalers), and what it needs.
SCALER_METADATA = {
    "redis": (
        {
            "address",
            "host",
            "port",
            "databaseIndex",
            "listName",
            "listLength",
            "activationListLength",
            "enableTLS",
            "usernameFromEnv",
            "passwordFromEnv",
            "addressFromEnv",
            "hostFromEnv",
            "portFromEnv",
        },
        {"listName"},
    ),
    "rabbitmq": (
        {"host", "hostFromEnv", "protocol", "queueName", "mode", "value", "activationValue", "vhostName"},
        {"queueName", "mode", "value"},
    ),
    "cpu": ({"value", "containerName"}, {"value"}),
    "memory": ({"value", "containerName"}, {"value"}),
}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_scaled_object(document: dict[str, Any]) -> None:
    """The schema, then what KEDA's admission webhook checks beyond it."""
    jsonschema.Draft202012Validator(SCALED_OBJECT).validate(document)
    spec = document["spec"]
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
    names = [trigger.get("name") for trigger in spec["triggers"] if trigger.get("name")]
    assert len(names) == len(set(names)), f"trigger names repeat: {names}"
    for trigger in spec["triggers"]:
        known, needed = SCALER_METADATA[trigger["type"]]
        assert set(trigger["metadata"]) <= known, trigger
        assert needed <= set(trigger["metadata"]), trigger
        if trigger["type"] in ("cpu", "memory"):
            assert trigger["metricType"] in ("Utilization", "AverageValue")
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers is not None:
        assert modifiers["formula"] and float(modifiers["target"]) > 0
        used = set(IDENTIFIER.findall(modifiers["formula"]))
        assert used <= set(names), f"the formula names triggers that do not exist: {sorted(used - set(names))}"
        assert not {t["type"] for t in spec["triggers"]} & {"cpu", "memory"}, "a formula cannot use cpu or memory"


def check(files: dict[str, str]) -> list[str]:
    """Validate every rendered manifest; the kinds seen, in order."""
    kinds = []
    for name, text in files.items():
        if not name.endswith(".yaml"):
            continue
        document = yaml.safe_load(text)
        kinds.append(document["kind"])
        if document["kind"] == "ScaledObject":
            check_scaled_object(document)
            continue
        for version in CHECKED_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)
    return kinds


@pytest.mark.parametrize(
    ("broker", "pools"),
    [
        ("redis://redis:6379/0", (CPU, IO)),
        ("rediss://user:secret@redis.example:6380/2", (CPU,)),
        ("amqp://guest:guest@rabbitmq:5672//", (CPU, IO)),
        ("redis://redis:6379/0", ({**CPU, "scaling_metric": "cpu", "target_value": 70},)),
        ("redis://redis:6379/0", ({**CPU, "scaling_metric": "memory", "target_value": 80},)),
        ("redis://redis:6379/0", ({**CPU, "min_workers": 0},)),  # scales from zero
    ],
)
def test_rendered_manifests_are_valid_kubernetes_and_keda_objects(
    broker: str, pools: tuple[dict[str, Any], ...]
) -> None:
    files = rendered(program(*pools), "kubernetes", broker_url=broker, result_backend="redis://redis:6379/1")
    kinds = check(files)
    assert kinds.count("ScaledObject") == 1 and kinds.count("Deployment") == len(pools) + 1


def test_the_shipped_example_manifests_are_valid() -> None:
    folder = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "pools" / "kubernetes"
    files = {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.iterdir())}
    assert sorted(check(files)) == ["Deployment", "Deployment", "Deployment", "ScaledObject"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["spec"].update(triggers=[]), "should be non-empty"),
        (lambda d: d["spec"]["triggers"][0].update(listName="x"), "Additional properties"),  # not in metadata
        (lambda d: d["spec"]["advanced"]["scalingModifiers"].update(metricType="Utilization"), "is not one of"),
        (lambda d: d["spec"].update(scalingModifiers={}), "Additional properties"),  # outside advanced: pruned
        (lambda d: d["spec"]["triggers"][9].update(name="list_0"), "trigger names repeat"),
        (lambda d: d["spec"]["triggers"][3].pop("name"), "names triggers that do not exist"),
        (lambda d: d["spec"].update(minReplicaCount=9), "assert 9 <= 6"),
    ],
)
def test_the_checks_catch_what_kubernetes_or_keda_would_refuse(change: Any, message: str) -> None:
    document = yaml.safe_load(rendered(program(CPU), "kubernetes")["worker-cpu-scaledobject.yaml"])
    check_scaled_object(document)
    change(document)
    with pytest.raises((jsonschema.ValidationError, AssertionError), match=message):
        check_scaled_object(document)


def test_the_kubernetes_schemas_catch_a_field_kubernetes_does_not_know() -> None:
    document = yaml.safe_load(rendered(program(CPU), "kubernetes")["worker-cpu-deployment.yaml"])
    document["spec"]["template"]["spec"]["containers"][0]["workdir"] = "/app"  # workingDir is the field
    with pytest.raises(kubernetes_validate.ValidationError, match="'workdir' was unexpected"):
        kubernetes_validate.validate(document, CHECKED_VERSIONS[-1], strict=True)
