"""The rendered deploy files run: each worker's command line, environment and working directory, read from
the systemd unit, the compose service and the Kubernetes Deployment as written, starts a real worker on the
local Redis, and a program dispatched to its pools completes there. For a program with a schedule, the
rendered beat fires it on the rendered worker, and the rendered events server answers only with its token.

Only the broker's host changes (the files' ``redis://redis:6379/0`` becomes the test Redis), and beat's
schedule file and the events server's port (a file and a port of the test's own); the process gets the
file's environment, the token the file asks the operator for, and a ``PATH`` alone. What does not run here: systemd's ``User=``, the
container image (no Docker engine on this machine: ``celery`` is found on ``PATH`` as the image's
``pip install`` puts it there, and the project's directory is this repository) and KEDA.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.steps import CORPUS
from namel3ss_celery import Namel3ssCelery, Settings
from namel3ss_celery.events.model import Event
from tests.waiting import wait_until

from .deployed import Launch, read, read_service
from .workers import CLI, REPO, WorkerProcess, free_port

pytestmark = pytest.mark.integration

WAIT = 90
RENDERED_BROKER = "redis://redis:6379/0"  # deploy's default broker, the compose file's Redis service
TOKEN = "NAMEL3SS_CELERY_EVENTS_TOKEN"


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


def scheduled_program(tag: str) -> dict[str, Any]:
    """``tagged_program`` with a schedule firing its ``sources`` block (on the io pool) every second, and a
    webhook trigger starting it too."""
    program = tagged_program(tag)
    config = {"interval_seconds": 1}
    trigger = {"name": f"tick-{tag}", "event_type": "schedule", "trigger_target": "sources", "source_config": config}
    hook = {"name": f"hook-{tag}", "event_type": "webhook", "trigger_target": "sources", "filter_fields": {"tag": tag}}
    program["event_triggers"] = [trigger, hook]
    return program


def make_project(redis_url: str, folder: Path, program: dict[str, Any], tag: str) -> dict[str, Any]:
    path = folder / "program.yaml"
    path.write_text(yaml.safe_dump(program, sort_keys=False))
    import examples.steps  # noqa: F401 - the steps the workers load

    settings = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    n3 = Namel3ssCelery(settings=Settings.from_mapping({**settings, "NAMEL3SS_CELERY_STEP_MODULES": "examples.steps"}))
    return {"n3": n3, "program": path, "tag": tag, "folder": folder}


@pytest.fixture(scope="module")
def scheduled(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    found = make_project(redis_url, tmp_path_factory.mktemp("scheduled"), scheduled_program(tag), tag)
    try:
        yield found
    finally:
        found["n3"].close()


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


def replaced(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with the value of ``option`` (``--port 8765`` or ``--schedule=FILE``) made ``value``."""
    if option.endswith("="):
        [found] = [word for word in argv if word.startswith(option)]
        return [option + value if word == found else word for word in argv]
    at = argv.index(option) + 1
    return [*argv[:at], value, *argv[at + 1 :]]


def fetch(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


@pytest.mark.parametrize("target", ["systemd", "compose", "kubernetes"])
def test_the_rendered_beat_fires_the_programs_schedule_and_the_events_server_wants_its_token(
    scheduled: dict[str, Any], redis_url: str, target: str
) -> None:
    """Beat fires the schedule; the events worker (the app's default queue) matches an emitted webhook; the
    io pool's worker runs both runs; the events server wants its token."""
    out = render(scheduled, target)
    tag, n3, folder = scheduled["tag"], scheduled["n3"], scheduled["folder"]
    store = n3.events._store()
    since = store.newest()
    beat, events = read_service(out, target, "beat"), read_service(out, target, "events")
    matcher = read_service(out, target, "events-worker")
    program = str(scheduled["program"])
    assert beat.argv[0].endswith("namel3ss-celery") and beat.argv[1:6] == [
        "beat",
        "-A",
        "namel3ss_celery",
        "--program",
        program,
    ]
    assert (
        events.argv[1:3] == ["events", "--serve"] and "--insecure" not in events.argv and "--token" not in events.argv
    )
    assert events.argv[events.argv.index("--host") + 1] == "0.0.0.0"
    assert events.asked == ((TOKEN,) if target != "systemd" else ())  # systemd: the environment file holds it
    assert TOKEN not in events.env
    token, port = uuid.uuid4().hex, free_port()
    services = [
        (f"io-{tag}", read(out, target, f"io-{tag}").argv, read(out, target, f"io-{tag}")),
        (f"beat-{target}", replaced(beat.argv, "--schedule=", str(folder / f"{target}-schedule")), beat),
        (f"events-{target}", replaced(events.argv, "--port", str(port)), events),
        (f"events-worker-{target}", matcher.argv, matcher),
    ]
    running = []
    try:
        for name, argv, launch in services:
            env = {**as_run_here(launch, redis_url), TOKEN: token}
            running.append(
                WorkerProcess("unused", env, folder, command=argv, name=name, cwd=Path(launch.cwd), inherit_env=False)
            )
        running[0].wait_ready(n3.app)

        def fired() -> list[Event]:
            found, after = [], since
            while batch := store.read(after, count=500):
                found += [e for _id, e in batch if e.event_type == "schedule" and e.data["trigger"] == f"tick-{tag}"]
                after = batch[-1][0]
            return found

        logs = lambda: "\n".join(process.log() for process in running)  # noqa: E731
        wait_until(lambda: len(fired()) >= 2, WAIT, lambda: f"the schedule did not fire\n{logs()}")
        slots = [e.data["slot"] for e in fired()]
        assert len(slots) == len(set(slots))
        first = fired()[0].event_id
        started = [e for _id, e in store.read(since, count=5000) if e.event_type == "workflow_started"]
        [run_id] = [e.data["instance_id"] for e in started if e.data.get("trigger_event_id") == first]
        result = n3.run(run_id).get(timeout=WAIT)  # the io worker ran the scheduled block
        assert result.final_result == {"about_queues": ["rabbitmq"], "about_memory": ["redis"]}, logs()

        hooked = n3.emit("webhook", {"tag": tag})  # matched on the events worker: this process has no program

        def hooked_runs() -> list[str]:
            started = [e for _id, e in store.read(since, count=5000) if e.event_type == "workflow_started"]
            return [e.data["instance_id"] for e in started if e.data.get("trigger_event_id") == hooked.event_id]

        wait_until(hooked_runs, WAIT, lambda: f"the webhook started no run\n{logs()}")
        [hooked_run] = hooked_runs()
        assert n3.run(hooked_run).get(timeout=WAIT).final_result == result.final_result, logs()

        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: fetch(url, None) == 401, WAIT, lambda: f"the events server did not answer\n{logs()}")
        assert fetch(url, "wrong") == 401 and fetch(url, token) == 200
        assert fetch(f"{url}?token={token}", None) == 200
    finally:
        for process in running:
            process.stop()


IMAGE_STEPS = '''
import sys

from namel3ss_celery import step


@step("image_prefix")
def image_prefix(step, context):
    """Where this worker's Python lives: the image's virtual environment, not the tests'."""
    return sys.prefix
'''


def build_without_docker(dockerfile: Path, context: Path, venv: Path) -> Path:
    """What ``docker build`` does with the rendered Dockerfile, here: its ``WORKDIR`` is a folder of this
    machine, ``COPY . .`` copies the build context there less what ``Dockerfile.dockerignore`` leaves out, and
    each ``RUN`` runs there as written with ``sh``, with the Dockerfile's ``ENV`` and the virtual environment
    ``venv`` standing in for the image's Python. The one ``RUN`` that needs root (``useradd``) is skipped.
    Returns the ``WORKDIR``."""
    from tests.unit.deploy.dockerfile import instructions

    ignored = [
        line.removeprefix("**/")
        for line in (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    workdir: Path | None = None
    ran = []
    for keyword, arguments in instructions(dockerfile.read_text()):
        if keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(arguments))
        elif keyword == "WORKDIR":
            workdir = Path(arguments)
        elif keyword == "COPY":
            assert arguments == ". ." and workdir is not None
            shutil.copytree(context, workdir, ignore=shutil.ignore_patterns(*ignored))
        elif keyword == "RUN" and not arguments.startswith("useradd "):
            done = subprocess.run(
                ["/bin/sh", "-c", arguments], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(arguments)
    assert workdir is not None and len(ran) == 1 and "pip install" in ran[0], ran
    return workdir


def test_the_rendered_images_install_step_installs_a_project_whose_worker_runs(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project of one's own, the namel3ss-celery wheel made as the Dockerfile says, files rendered by
    ``deploy --target compose``: the compose file builds from the project with that Dockerfile, whose install
    step, run with the real ``pip`` into a new virtual environment, gives a worker that runs the rendered
    command and the project's steps."""
    tag = uuid.uuid4().hex[:6]
    project, app, venv = tmp_path / "proj", tmp_path / "app", tmp_path / "venv"
    project.mkdir()
    pool = f"image-{tag}"
    (project / "image_steps.py").write_text(IMAGE_STEPS)
    (project / "program.yaml").write_text(
        f"worker_pools:\n  - {{name: {pool}, queue_name: {pool}}}\n"
        f"parallel_blocks:\n  - {{name: where, steps: [{{target: image_prefix, worker_pool: {pool}}}]}}\n"
    )
    made = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", "wheels", str(REPO)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    deployed = subprocess.run(
        [CLI, "deploy", "--target", "compose", "program.yaml", "--steps", "image_steps", "--workdir", str(app)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert deployed.returncode == 0, deployed.stderr
    folder = project / "deploy" / "program" / "compose"
    service = yaml.safe_load((folder / "compose.yaml").read_text())["services"][f"worker-{pool}"]
    context = (folder / service["build"]["context"]).resolve()
    assert context == project.resolve()
    dockerfile = context / service["build"]["dockerfile"]
    assert dockerfile.resolve() == (folder / "Dockerfile").resolve()

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    assert build_without_docker(dockerfile, context, venv) == app
    assert (venv / "bin" / "celery").exists() and (venv / "bin" / "namel3ss-celery").exists()

    launch = read_service(folder, "compose", f"worker-{pool}")
    assert launch.cwd == str(app) and launch.argv[0] == "celery"
    env = {**as_run_here(launch, redis_url), "PATH": os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])}
    worker = WorkerProcess("unused", env, tmp_path, command=launch.argv, name=pool, cwd=app, inherit_env=False)
    monkeypatch.syspath_prepend(str(project))  # this process knows the step too, to dispatch it
    settings = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
    n3 = Namel3ssCelery(settings=Settings.from_mapping({**settings, "NAMEL3SS_CELERY_STEP_MODULES": "image_steps"}))
    try:
        worker.wait_ready(n3.app)
        result = n3.dispatch(str(project / "program.yaml")).get(timeout=WAIT)
        assert result.overall_status == "completed", worker.log()
        assert result.final_result == {"step_0": str(venv)}, worker.log()  # it ran on the image's Python
    finally:
        worker.stop()
        n3.close()
