"""rendered(): the files for each target parse, and say what the pool and queue specs say."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from namel3ss_celery.deploy import Target, render
from namel3ss_celery.errors import ConfigurationError, RoutingError
from namel3ss_celery.spec import load_program

from .pools import CPU, program, rendered


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
        rendered(program(), "nomad")
    assert info.value.setting == "target"


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_an_in_memory_broker_is_refused(target: str) -> None:
    with pytest.raises(ConfigurationError, match="lives inside one process") as info:
        rendered(program(), target, broker_url="memory://")
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
        rendered(program(queues=queues), target)


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_a_program_without_pools_has_nothing_to_deploy(target: str) -> None:
    with pytest.raises(RoutingError, match="declares no worker_pools"):
        rendered(load_program({"parallel_blocks": [{"name": "b", "steps": [{"target": "t"}]}]}), target)


def test_systemd_units() -> None:
    files = rendered(program(), "systemd", app="proj.celery", broker_url="redis://cache:6379/2", step_modules=())
    assert list(files) == [
        "namel3ss-celery-worker-cpu.service",
        "namel3ss-celery-worker-io.service",
        "namel3ss-celery-beat.service",
    ]
    cpu = unit(files["namel3ss-celery-worker-cpu.service"])
    assert set(cpu) == {"Unit", "Service", "Install"}
    service = cpu["Service"]
    assert exec_start(service) == [
        "/srv/namel3ss-celery/.venv/bin/celery",  # an absolute program: systemd's PATH has no virtualenv
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
    assert values(service, "WorkingDirectory") == ["/srv/namel3ss-celery"]
    assert values(service, "Environment") == [
        '"CELERY_BROKER_URL=redis://cache:6379/2"',
        '"CELERY_RESULT_BACKEND=redis://cache:6379/2"',  # the Redis broker, unless --backend says otherwise
        '"NAMEL3SS_CELERY_PROGRAM=/srv/namel3ss-celery/program.yaml"',
        '"PYTHONPATH=/srv/namel3ss-celery"',
        '"NAMEL3SS_CELERY_POOL=cpu"',
        '"OMP_NUM_THREADS=1"',
        '"PRICE=5$ 100%%"',
    ]  # no step modules: proj.celery imports its own steps
    assert values(service, "KillMode") == ["mixed"]
    assert values(service, "TimeoutStopSec") == ["80"]
    assert values(service, "EnvironmentFile") == ["-/etc/namel3ss-celery/environment"]
    assert values(cpu["Install"], "WantedBy") == ["multi-user.target"]
    io = unit(files["namel3ss-celery-worker-io.service"])["Service"]
    assert exec_start(io)[4:] == [
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
    assert exec_start(beat) == [  # the program's schedules checked, then celery beat
        "/srv/namel3ss-celery/.venv/bin/namel3ss-celery",
        "beat",
        "-A",
        "proj.celery",
        "--program",
        "/srv/namel3ss-celery/program.yaml",
        "--schedule=/var/lib/namel3ss-celery/celerybeat-schedule",
    ]
    assert values(beat, "StateDirectory") == ["namel3ss-celery"]
    assert values(beat, "WorkingDirectory") == ["/srv/namel3ss-celery"]
    assert values(beat, "Environment") == [
        '"CELERY_BROKER_URL=redis://cache:6379/2"',
        '"CELERY_RESULT_BACKEND=redis://cache:6379/2"',
        '"NAMEL3SS_CELERY_PROGRAM=/srv/namel3ss-celery/program.yaml"',  # beat reads its schedules there
        '"PYTHONPATH=/srv/namel3ss-celery"',
    ]


def test_systemd_units_run_in_the_project_directory_and_virtualenv_given() -> None:
    files = rendered(
        program(),
        "systemd",
        program_path="flows/main.yaml",
        workdir="/opt/100% proj",
        venv="/opt/venvs/proj",
        result_backend="redis://results:6379/4",
    )
    service = unit(files["namel3ss-celery-worker-cpu.service"])["Service"]
    assert exec_start(service)[:4] == ["/opt/venvs/proj/bin/celery", "-A", "namel3ss_celery", "worker"]
    assert values(service, "WorkingDirectory") == ["/opt/100%% proj"]
    assert values(service, "Environment")[:5] == [
        '"CELERY_BROKER_URL=redis://redis:6379/0"',
        '"CELERY_RESULT_BACKEND=redis://results:6379/4"',
        '"NAMEL3SS_CELERY_STEP_MODULES=proj.steps,proj.more_steps"',
        '"NAMEL3SS_CELERY_PROGRAM=/opt/100%% proj/flows/main.yaml"',
        '"PYTHONPATH=/opt/100%% proj"',
    ]
    absolute = rendered(program(), "systemd", program_path="/etc/proj/main.yaml")
    assert '"NAMEL3SS_CELERY_PROGRAM=/etc/proj/main.yaml"' in values(
        unit(absolute["namel3ss-celery-worker-io.service"])["Service"], "Environment"
    )


def test_systemd_refuses_a_line_break_in_an_environment_value() -> None:
    with pytest.raises(RoutingError, match="line break"):
        rendered(program({**CPU, "environment_variables": {"KEY": "a\nb"}}), "systemd")


def test_compose_file() -> None:
    files = rendered(program(), "compose", app="proj")
    assert list(files) == ["compose.yaml", "Dockerfile", "Dockerfile.dockerignore"]
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert list(services) == ["redis", "worker-cpu", "worker-io", "beat", "flower"]
    cpu = services["worker-cpu"]
    assert (cpu["image"], cpu["working_dir"]) == ("namel3ss-celery-app:latest", "/app")  # the Dockerfile's image
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
        "CELERY_RESULT_BACKEND": "redis://redis:6379/0",
        "NAMEL3SS_CELERY_STEP_MODULES": "proj.steps,proj.more_steps",
        "NAMEL3SS_CELERY_PROGRAM": "/app/program.yaml",
        "PYTHONPATH": "/app",
        "NAMEL3SS_CELERY_POOL": "cpu",
        "OMP_NUM_THREADS": "1",
        "PRICE": "5$$ 100%",  # compose would interpolate a single $
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
    beat = services["beat"]
    assert beat["command"][:6] == ["namel3ss-celery", "beat", "-A", "proj", "--program", "/app/program.yaml"]
    assert beat["environment"]["NAMEL3SS_CELERY_PROGRAM"] == "/app/program.yaml"
    flower = services["flower"]
    assert flower["image"] == "mher/flower:2.0" and "working_dir" not in flower and "build" not in flower
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["environment"]["CELERY_RESULT_BACKEND"] == "redis://redis:6379/0"
    assert flower["ports"] == ["5555:5555"]
    assert "rabbitmq" not in services


def test_compose_with_rabbitmq_runs_it_beside_redis() -> None:
    files = rendered(program(), "compose", broker_url="amqp://guest:guest@rabbitmq:5672//")
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert services["worker-cpu"]["environment"]["CELERY_RESULT_BACKEND"] == "redis://redis:6379/1"  # its own Redis
    assert "'namel3ss-celery[rabbitmq]==" in files["Dockerfile"]  # the AMQP client
    assert list(services)[:2] == ["redis", "rabbitmq"]
    assert services["worker-cpu"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "rabbitmq": {"condition": "service_healthy"},
    }
    assert services["worker-cpu"]["environment"]["CELERY_BROKER_URL"] == "amqp://guest:guest@rabbitmq:5672//"


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_pool_names_must_be_usable_in_file_names(target: str) -> None:
    with pytest.raises(RoutingError, match="may hold only letters"):
        rendered(program({**CPU, "name": "a/b"}), target)


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_a_pool_cannot_pick_its_own_broker(target: str) -> None:
    with pytest.raises(RoutingError, match="sets CELERY_BROKER_URL"):
        rendered(program({**CPU, "environment_variables": {"CELERY_BROKER_URL": "redis://other"}}), target)


def test_a_locality_aware_pool_runs_in_its_region_and_scales_on_the_regions_queue() -> None:
    spec = load_program(
        {
            "worker_pools": [{"name": "gpu", "queue_name": "gpu", "min_workers": 0, "max_workers": 3}],
            "distributed_configs": [
                {"worker_pool": "gpu", "distribution_policy": "locality_aware", "locality_preference": "eu"}
            ],
        }
    )
    files = rendered(spec, "kubernetes", program_path="/app/program.yaml")
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
        rendered(spec, "systemd")


@pytest.mark.parametrize("target", [t.value for t in Target])
def test_the_default_app_needs_step_modules(target: str) -> None:
    with pytest.raises(ConfigurationError, match="give --steps MODULE") as info:
        render(program(), target)  # its workers would fail every step: no task 'n3.step.<target>'
    assert info.value.setting == "step_modules"
    assert render(program(), target, app="proj")  # the user's app imports its own steps


@pytest.mark.parametrize("target", ["systemd", "kubernetes"])
def test_an_amqp_broker_needs_a_result_backend(target: str) -> None:
    with pytest.raises(ConfigurationError, match="keeps no results: give --backend") as info:
        rendered(program(), target, broker_url="amqp://guest:guest@rabbit//")
    assert info.value.setting == "result_backend"


@pytest.mark.parametrize("backend", ["memory://", "cache+memory://", "disabled://", " "])
def test_a_result_backend_only_one_process_reads_is_refused(backend: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be shared by deployed workers") as info:
        rendered(program(), "kubernetes", result_backend=backend)
    assert info.value.setting == "result_backend"


@pytest.mark.parametrize(("option", "value"), [("workdir", "srv/proj"), ("venv", ".venv")])
def test_paths_must_be_absolute(option: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match="the services need an absolute path") as info:
        rendered(program(), "systemd", **{option: value})
    assert info.value.setting == option


@pytest.mark.parametrize("target", [t.value for t in Target])
@pytest.mark.parametrize("variable", ["PYTHONPATH", "CELERY_RESULT_BACKEND", "NAMEL3SS_CELERY_STEP_MODULES"])
def test_a_pool_cannot_set_what_every_service_shares(target: str, variable: str) -> None:
    with pytest.raises(RoutingError, match=f"sets {variable} in environment_variables"):
        rendered(program({**CPU, "environment_variables": {variable: "x"}}), target)
