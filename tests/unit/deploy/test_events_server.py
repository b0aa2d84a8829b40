"""The events server in the deploy files: rendered where the program has event triggers or handlers, on every
address behind a token from ``NAMEL3SS_CELERY_EVENTS_TOKEN`` (never in argv, never ``--insecure``); the
Kubernetes manifests valid; the image with the ``events`` extra."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from namel3ss_celery.errors import RoutingError
from namel3ss_celery.spec import ProgramSpec, load_program

from .pools import CPU, IO, rendered
from .test_schemas import check

TOKEN = "NAMEL3SS_CELERY_EVENTS_TOKEN"
BLOCK = {"name": "ticked", "steps": [{"target": "proj.tick", "worker_pool": "cpu"}]}
WEBHOOK = {"name": "hooked", "event_type": "webhook", "trigger_target": "ticked"}
SCHEDULE = {
    "name": "poll",
    "event_type": "schedule",
    "trigger_target": "ticked",
    "source_config": {"interval_seconds": 30},
}
HANDLER = {"name": "audit", "event_types": ["custom"], "route_to": "ticked"}


def program(**events: Any) -> ProgramSpec:
    return load_program({"worker_pools": [CPU, IO], "parallel_blocks": [BLOCK], **events})


SERVED = [{"event_triggers": [WEBHOOK]}, {"event_triggers": [SCHEDULE]}, {"event_handlers": [HANDLER]}]
ARGV = ["events", "--serve", "-A", "proj", "--host", "0.0.0.0", "--port", "8765"]


def systemd_words(line: str) -> list[str]:
    return line.partition("=")[2].split()


@pytest.mark.parametrize("events", SERVED)
def test_systemd_runs_the_events_server_with_the_token_from_its_environment_file(events: dict[str, Any]) -> None:
    files = rendered(program(**events), "systemd", app="proj")
    text = files["namel3ss-celery-events.service"]
    lines = text.splitlines()
    [exec_start] = [line for line in lines if line.startswith("ExecStart=")]
    assert systemd_words(exec_start) == ["/srv/namel3ss-celery/.venv/bin/namel3ss-celery", *ARGV]
    assert "--insecure" not in text and "--token" not in text
    assert "EnvironmentFile=-/etc/namel3ss-celery/environment" in lines and TOKEN in text  # named, not given
    assert not [line for line in lines if line.startswith("Environment=") and TOKEN in line]
    assert '"NAMEL3SS_CELERY_PROGRAM=/srv/namel3ss-celery/program.yaml"' in text
    assert "StateDirectory" not in text and "Restart=always" in lines


@pytest.mark.parametrize("events", SERVED)
def test_compose_runs_the_events_server_asking_for_the_token(events: dict[str, Any]) -> None:
    files = rendered(program(**events), "compose", app="proj")
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert list(services) == ["redis", "worker-cpu", "worker-io", "beat", "events-worker", "events", "flower"]
    events_service = services["events"]
    assert events_service["command"] == ["namel3ss-celery", *ARGV]
    assert (
        events_service["environment"][TOKEN]
        == f"${{{TOKEN}:?set {TOKEN} to the token clients of the events server send}}"
    )
    assert events_service["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert events_service["ports"] == ["8765:8765"]
    assert events_service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "pip install" in files["Dockerfile"] and "namel3ss-celery[events]==" in files["Dockerfile"]


@pytest.mark.parametrize("events", SERVED)
def test_kubernetes_runs_the_events_server_with_the_token_from_a_secret(events: dict[str, Any]) -> None:
    files = rendered(program(**events), "kubernetes", app="proj")
    deployment = yaml.safe_load(files["events-deployment.yaml"])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["namel3ss-celery", *ARGV]
    secret = {"secretKeyRef": {"name": "namel3ss-celery-events", "key": "token"}}
    assert {"name": TOKEN, "valueFrom": secret} in container["env"]
    assert container["ports"] == [{"name": "events", "containerPort": 8765}]
    service = yaml.safe_load(files["events-service.yaml"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "events", "port": 8765, "targetPort": "events"}]
    assert sorted(check(files)) == ["Deployment"] * 5 + ["ScaledObject", "Service"]


@pytest.mark.parametrize("events", SERVED)
def test_a_worker_of_the_default_queue_matches_the_events_beside_the_pool_workers(events: dict[str, Any]) -> None:
    """Pool workers consume only their pools' queues, and an emitted event's n3.events.match task goes to the
    app's default queue: each target runs one worker there (no -Q), with the program and the steps."""
    pools = ",".join(p.queue_name for p in program().worker_pools)  # pool queues: never the events worker's
    argv = ["-A", "proj", "worker", "-X", pools, "-n", "events@%h", "--concurrency=2", "--prefetch-multiplier=1"]
    unit = rendered(program(**events), "systemd", app="proj")["namel3ss-celery-events-worker.service"]
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    systemd_argv = [word.replace("%", "%%") for word in argv]  # systemd's own escape
    assert systemd_words(exec_start) == ["/srv/namel3ss-celery/.venv/bin/celery", *systemd_argv]
    assert '"NAMEL3SS_CELERY_PROGRAM=/srv/namel3ss-celery/program.yaml"' in unit and "NAMEL3SS_CELERY_POOL" not in unit
    service = yaml.safe_load(rendered(program(**events), "compose", app="proj")["compose.yaml"])["services"]
    assert service["events-worker"]["command"] == ["celery", *argv]
    assert service["events-worker"]["environment"]["NAMEL3SS_CELERY_PROGRAM"] == "/app/program.yaml"
    manifest = yaml.safe_load(rendered(program(**events), "kubernetes", app="proj")["events-worker-deployment.yaml"])
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["celery", *argv] and manifest["spec"]["replicas"] == 1
    assert "StateDirectory" not in unit and "strategy" not in manifest["spec"]  # stateless, unlike beat


def test_a_pool_named_events_is_refused_where_the_events_worker_would_share_its_node_name() -> None:
    named = load_program(
        {
            "worker_pools": [CPU | {"name": "events"}],
            "parallel_blocks": [BLOCK | {"steps": [{"target": "proj.tick", "worker_pool": "events"}]}],
            "event_triggers": [WEBHOOK],
        }
    )
    for target in ("systemd", "compose", "kubernetes"):
        with pytest.raises(RoutingError, match="worker pool 'events': its workers are named events@host"):
            rendered(named, target, app="proj")


@pytest.mark.parametrize("target", ["systemd", "compose", "kubernetes"])
def test_a_program_without_triggers_or_handlers_has_no_events_server(target: str) -> None:
    files = rendered(program(), target, app="proj")
    assert not [name for name in files if "events" in name]
    assert "namel3ss-celery events" not in "\n".join(files.values())
    assert "events:" not in files.get("compose.yaml", "")
    assert "[events]" not in files.get("Dockerfile", "")
    assert "events@" not in "\n".join(files.values())  # nor the events worker


def test_on_rabbitmq_the_image_has_both_extras() -> None:
    files = rendered(
        program(event_triggers=[WEBHOOK]),
        "compose",
        broker_url="amqp://guest:guest@rabbitmq:5672//",
    )
    assert "namel3ss-celery[rabbitmq,events]==" in files["Dockerfile"]
