"""render(): the files for each target parse, and say what the pool and queue specs say."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from namel3ss_celery.deploy import Target, render
from namel3ss_celery.errors import ConfigurationError, RoutingError
from namel3ss_celery.spec import load_program

from .pools import CPU, program


def unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as sections of (key, value) lines, keys repeated as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.append((key, value))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def exec_start(section: list[tuple[str, str]]) -> list[str]:
    """ExecStart as the argv systemd runs: words split, specifiers and variables unescaped."""
    [line] = values(section, "ExecStart")
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line)]


def test_an_unknown_target_is_refused_listing_the_choices() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown deploy target 'nomad'; choose one of: systemd, compose, kubernetes"
    ) as info:
        render(program(), "nomad")
    assert info.value.setting == "target"


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_an_in_memory_broker_is_refused(target: str) -> None:
    with pytest.raises(ConfigurationError, match="lives inside one process") as info:
        render(program(), target, broker_url="memory://")
    assert info.value.setting == "broker_url"


@pytest.mark.parametrize("target", [t.value for t in Target])
@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ([{"name": "cpu_q", "reliability": "exactly_once"}], "exactly_once"),
        (
            [{"name": "cpu_q", "visibility_timeout": 900}, {"name": "io_q", "visibility_timeout": 60}],
            "cpu_q \\(900s\\), io_q \\(60s\\)",
        ),
        ([{"name": "gpu"}], "consumed by no worker pool"),
    ],
)
def test_every_target_refuses_queues_that_cannot_work(target: str, queues: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        render(program(queues=queues), target)


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_a_program_without_pools_has_nothing_to_deploy(target: str) -> None:
    with pytest.raises(RoutingError, match="declares no worker_pools"):
        render(load_program({"parallel_blocks": [{"name": "b", "steps": [{"target": "t"}]}]}), target)


def test_systemd_units() -> None:
    files = render(program(), "systemd", app="proj.celery", broker_url="redis://cache:6379/2")
    assert list(files) == [
        "namel3ss-celery-worker-cpu.service",
        "namel3ss-celery-worker-io.service",
        "namel3ss-celery-beat.service",
    ]
    cpu = unit(files["namel3ss-celery-worker-cpu.service"])
    assert set(cpu) == {"Unit", "Service", "Install"}
    service = cpu["Service"]
    assert exec_start(service) == [
        "/usr/bin/env",
        "celery",
        "-A",
        "proj.celery",
        "worker",
        "-Q",
        "cpu_q",
        "-n",
        "cpu@%h",
        "--prefetch-multiplier=1",
        "--autoscale=6,1",
        "--max-memory-per-child=524288",
        "--soft-time-limit=60",
        "--time-limit=70",
    ]
    assert "-n cpu@%%h" in values(service, "ExecStart")[0]  # %h is Celery's, not systemd's
    assert values(service, "Environment") == [
        '"CELERY_BROKER_URL=redis://cache:6379/2"',
        '"NAMEL3SS_CELERY_POOL=cpu"',
        '"NAMEL3SS_CELERY_PROGRAM=program.yaml"',
        '"OMP_NUM_THREADS=1"',
        '"PRICE=5$ 100%%"',
    ]
    assert values(service, "KillMode") == ["mixed"]
    assert values(service, "TimeoutStopSec") == ["80"]
    assert values(service, "EnvironmentFile") == ["-/etc/namel3ss-celery/environment"]
    assert values(cpu["Install"], "WantedBy") == ["multi-user.target"]
    io = unit(files["namel3ss-celery-worker-io.service"])["Service"]
    assert exec_start(io)[5:] == [
        "-Q",
        "io_q",
        "-n",
        "io@%h",
        "--prefetch-multiplier=1",
        "--pool=threads",
        "--concurrency=12",
    ]
    assert values(io, "TimeoutStopSec") == []
    beat = unit(files["namel3ss-celery-beat.service"])["Service"]
    assert exec_start(beat) == [
        "/usr/bin/env",
        "celery",
        "-A",
        "proj.celery",
        "beat",
        "--schedule=/var/lib/namel3ss-celery/celerybeat-schedule",
    ]
    assert values(beat, "StateDirectory") == ["namel3ss-celery"]
    assert any("NAMEL3SS_CELERY_PROGRAM=" in v for v in values(beat, "Environment"))  # it runs the schedules


def test_systemd_refuses_a_line_break_in_an_environment_value() -> None:
    with pytest.raises(RoutingError, match="line break"):
        render(program({**CPU, "environment_variables": {"KEY": "a\nb"}}), "systemd")


def test_compose_file() -> None:
    files = render(program(), "compose", app="proj")
    assert list(files) == ["compose.yaml"]
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert list(services) == ["redis", "worker-cpu", "worker-io", "beat", "flower"]
    cpu = services["worker-cpu"]
    assert cpu["command"] == [
        "celery",
        "-A",
        "proj",
        "worker",
        "-Q",
        "cpu_q",
        "-n",
        "cpu@%h",
        "--prefetch-multiplier=1",
        "--autoscale=6,1",
        "--max-memory-per-child=524288",
        "--soft-time-limit=60",
        "--time-limit=70",
    ]
    assert cpu["environment"] == {
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "NAMEL3SS_CELERY_POOL": "cpu",
        "NAMEL3SS_CELERY_PROGRAM": "program.yaml",
        "OMP_NUM_THREADS": "1",
        "PRICE": "5$$ 100%",  # compose would interpolate a single $
        "CELERY_RESULT_BACKEND": "redis://redis:6379/1",
    }
    assert cpu["stop_grace_period"] == "80s"
    assert cpu["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["worker-io"]["command"][4:] == [
        "-Q",
        "io_q",
        "-n",
        "io@%h",
        "--prefetch-multiplier=1",
        "--pool=threads",
        "--concurrency=12",
    ]
    assert services["beat"]["command"][:4] == ["celery", "-A", "proj", "beat"]
    assert "NAMEL3SS_CELERY_PROGRAM" in services["beat"]["environment"]  # the program's schedules
    flower = services["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["ports"] == ["5555:5555"]
    assert "rabbitmq" not in services


def test_compose_with_rabbitmq_runs_it_beside_redis() -> None:
    files = render(program(), "compose", broker_url="amqp://guest:guest@rabbitmq:5672//")
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert list(services)[:2] == ["redis", "rabbitmq"]
    assert services["worker-cpu"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "rabbitmq": {"condition": "service_healthy"},
    }
    assert services["worker-cpu"]["environment"]["CELERY_BROKER_URL"] == "amqp://guest:guest@rabbitmq:5672//"


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_pool_names_must_be_usable_in_file_names(target: str) -> None:
    with pytest.raises(RoutingError, match="may hold only letters"):
        render(program({**CPU, "name": "a/b"}), target)


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_a_pool_cannot_pick_its_own_broker(target: str) -> None:
    with pytest.raises(RoutingError, match="sets CELERY_BROKER_URL"):
        render(program({**CPU, "environment_variables": {"CELERY_BROKER_URL": "redis://other"}}), target)


def test_a_locality_aware_pool_runs_in_its_region_and_scales_on_the_regions_queue() -> None:
    spec = load_program(
        {
            "worker_pools": [{"name": "gpu", "queue_name": "gpu", "min_workers": 0, "max_workers": 3}],
            "distributed_configs": [
                {"worker_pool": "gpu", "distribution_policy": "locality_aware", "locality_preference": "eu"}
            ],
        }
    )
    files = render(spec, "kubernetes", program_path="/app/program.yaml")
    deployment = yaml.safe_load(files["worker-gpu-deployment.yaml"])
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NAMEL3SS_CELERY_REGION"] == "eu" and env["NAMEL3SS_CELERY_PROGRAM"] == "/app/program.yaml"
    triggers = yaml.safe_load(files["worker-gpu-scaledobject.yaml"])["spec"]["triggers"]
    assert triggers[0]["metadata"]["listName"] == "gpu.eu"


def test_a_pool_may_not_set_what_deploy_sets() -> None:
    spec = load_program(
        {"worker_pools": [{"name": "gpu", "queue_name": "gpu", "environment_variables": {"NAMEL3SS_CELERY_POOL": "x"}}]}
    )
    with pytest.raises(RoutingError, match="sets NAMEL3SS_CELERY_POOL in environment_variables"):
        render(spec, "systemd")
