"""The rendered deploy files run: each worker's command line, environment and working directory, read from
the systemd unit, the compose service and the Kubernetes Deployment as written, starts a real worker on the
local Redis, and a program dispatched to its pools completes there.

Only the broker's host changes (the files' ``redis://redis:6379/0`` becomes the test Redis); the process
gets the file's environment and a ``PATH`` alone. What does not run here: systemd's ``User=``, the
container image (no Docker engine on this machine: ``celery`` is found on ``PATH`` as the image's
``pip install`` puts it there, and the project's directory is this repository) and KEDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.steps import CORPUS
from namel3ss_celery import Namel3ssCelery, Settings

from .deployed import Launch, read
from .workers import CLI, REPO, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 90
RENDERED_BROKER = "redis://redis:6379/0"  # deploy's default broker, the compose file's Redis service


def tagged_program(tag: str) -> dict[str, Any]:
    """examples/pools.yaml with pools and queues of this test's own, and a block on each pool."""
    program = yaml.safe_load((REPO / "examples" / "pools.yaml").read_text())
    names = {pool["name"]: f"{pool['name']}-{tag}" for pool in program["worker_pools"]}
    for pool in program["worker_pools"]:
        pool["name"] = pool["queue_name"] = names[pool["name"]]
    for queue in program["task_queues"]:
        queue["name"] = names[queue["name"]]
        if "dead_letter_queue" in queue:
            queue["dead_letter_queue"] = f"{queue['name']}.dead"
    for config in program["distributed_configs"]:
        config["worker_pool"] = names[config["worker_pool"]]
    for block in program["parallel_blocks"]:
        for step in block["steps"]:
            step["worker_pool"] = names[step["worker_pool"]]
    io = names["io"]
    program["parallel_blocks"].append(
        {
            "name": "sources",
            "steps": [
                {"name": "about_queues", "target": "fetch_sources", "query": "queues", "worker_pool": io},
                {"name": "about_memory", "target": "fetch_sources", "query": "memory", "worker_pool": io},
            ],
        }
    )
    return program


@pytest.fixture(scope="module")
def project(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    folder = tmp_path_factory.mktemp("deployed")
    path = folder / "program.yaml"
    path.write_text(yaml.safe_dump(tagged_program(tag), sort_keys=False))
    import examples.steps  # noqa: F401 - the steps the workers load

    settings = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    n3 = Namel3ssCelery(settings=Settings.from_mapping({**settings, "NAMEL3SS_CELERY_STEP_MODULES": "examples.steps"}))
    try:
        yield {"n3": n3, "program": path, "tag": tag, "folder": folder}
    finally:
        n3.close()


def render(project: dict[str, Any], target: str) -> Path:
    """``namel3ss-celery deploy`` as a user runs it from the project's directory (this repository)."""
    out = project["folder"] / target
    options = ["--steps", "examples.steps", "--workdir", str(REPO)]
    if target == "systemd":
        options += ["--venv", sys.prefix]  # the virtual environment running these tests
    done = subprocess.run(
        [CLI, "deploy", "--target", target, str(project["program"]), "--out", str(out), *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return out


def as_run_here(launch: Launch, redis_url: str) -> dict[str, str]:
    """The file's environment with the broker's host made the test Redis, and a PATH (the image's, the host's)."""
    moved = {name for name, value in launch.env.items() if value == RENDERED_BROKER}
    assert moved == {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}, launch.env
    assert "NAMEL3SS_CELERY_STEP_MODULES" in launch.env and "PATH" not in launch.env
    env = {name: redis_url if name in moved else value for name, value in launch.env.items()}
    return {**env, "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])}


@pytest.mark.parametrize("target", ["systemd", "compose", "kubernetes"])
def test_each_rendered_worker_runs_its_pools_steps(project: dict[str, Any], redis_url: str, target: str) -> None:
    out = render(project, target)
    tag, n3 = project["tag"], project["n3"]
    workers = []
    try:
        for pool in (f"cpu-{tag}", f"io-{tag}"):
            launch = read(out, target, pool)
            assert launch.cwd == str(REPO) and os.path.isabs(launch.env["NAMEL3SS_CELERY_PROGRAM"])
            if target == "systemd":
                assert launch.argv[0] == os.path.join(sys.prefix, "bin", "celery")  # absolute, as systemd wants
            worker = WorkerProcess(
                "unused",
                as_run_here(launch, redis_url),
                project["folder"],
                command=launch.argv,
                name=pool,  # the rendered `-n <pool>@%h`
                cwd=Path(launch.cwd),
                inherit_env=False,
            )
            workers.append(worker)
        for worker in workers:
            worker.wait_ready(n3.app)
        result = n3.dispatch(str(project["program"])).get(timeout=WAIT)
        logs = "\n".join(worker.log() for worker in workers)
        assert result.overall_status == "completed", logs
        assert result.blocks["analyse"].final_result == sum(len(CORPUS[doc].split()) for doc in CORPUS)
        assert result.blocks["sources"].final_result == {"about_queues": ["rabbitmq"], "about_memory": ["redis"]}
        assert "n3.step.fetch_sources" in workers[1].log()  # the io worker logs at INFO
    finally:
        for worker in workers:
            worker.stop()
