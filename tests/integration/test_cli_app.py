"""``-A/--app`` on every command, as ``celery -A`` has: a project of one's own, its steps, its broker.

The project is written to a folder of its own (``proj/celery.py``, with ``@n3.step`` on its app), and both
the command and the worker run from there, as a user runs them from their project's root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from namel3ss_celery import Namel3ssCelery, Settings

from .workers import CLI, REPO, WorkerProcess

pytestmark = pytest.mark.integration

PROJECT = """
import os

from celery import Celery

from namel3ss_celery import Namel3ssCelery

app = Celery("proj", broker=os.environ["PROJ_BROKER"], backend=os.environ["PROJ_BROKER"])
app.conf.task_default_queue = os.environ["PROJ_QUEUE"]
n3 = Namel3ssCelery(app)


@n3.step("fetch_page")
def fetch_page(step, context):
    return {"page": step["url"], "length": len(step["url"])}
"""

PROGRAM = """
parallel_blocks:
  - name: pages
    strategy: all
    steps:
      - {target: fetch_page, url: "https://example.org/a"}
      - {target: fetch_page, url: "https://example.org/bb"}
"""


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    program: Path

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
        return subprocess.run(
            [CLI, *args],
            cwd=self.root,
            env={**clean, **self.env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def project(redis_url: str, tmp_path: Path) -> Iterator[Project]:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "celery.py").write_text(textwrap.dedent(PROJECT))
    program = tmp_path / "pages.yaml"
    program.write_text(PROGRAM)
    yield Project(tmp_path, {"PROJ_BROKER": redis_url, "PROJ_QUEUE": f"proj-{uuid.uuid4().hex[:8]}"}, program)


def test_run_and_status_use_the_apps_own_steps_and_broker(project: Project) -> None:
    settings = Settings.from_mapping({"CELERY_BROKER_URL": project.env["PROJ_BROKER"]})
    probe = Namel3ssCelery(settings=settings)
    worker = WorkerProcess("proj", project.env, project.root, queues=[project.env["PROJ_QUEUE"]], cwd=project.root)
    try:
        worker.wait_ready(probe.app)
        ran = project.cli("run", "-A", "proj", str(project.program), "--timeout", "60")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "program 'program': completed" in ran.stdout and "2/2 steps ok" in ran.stdout
        (run_id,) = re.findall(r"\(run ([0-9a-f]{32})\)", ran.stdout)
        status = project.cli("status", "--app", "proj.celery:app", run_id)
        assert status.returncode == 0, status.stderr
        assert ": completed" in status.stdout and "block pages" in status.stdout and "2/2 steps ok" in status.stdout
        assert "n3.step.fetch_page" in worker.log()
    finally:
        worker.stop()
        probe.close()


def test_run_local_on_the_app_needs_no_worker(project: Project) -> None:
    ran = project.cli("run", "-A", "proj", str(project.program), "--local")
    assert ran.returncode == 0, ran.stderr
    assert "2/2 steps ok" in ran.stdout and "(run local)" in ran.stdout


def test_dlq_reads_the_apps_broker(project: Project) -> None:
    queue = f"{project.env['PROJ_QUEUE']}.dead"
    listed = project.cli("dlq", "list", "-A", "proj", "--queue", queue)
    assert listed.returncode == 0, listed.stderr
    assert f"{queue}: 0 dead letters" in listed.stdout


def test_a_wrong_app_is_a_clear_error(project: Project) -> None:
    missing = project.cli("run", "-A", "no_such_project", str(project.program))
    assert missing.returncode == 2
    assert "--app no_such_project: no Celery app found there" in missing.stderr
    both = project.cli("status", "-A", "proj", "--broker", project.env["PROJ_BROKER"], "0" * 32)
    assert both.returncode == 2
    assert "drop --broker/--backend, or drop --app" in both.stderr


def test_deploy_renders_the_app_given(project: Project, tmp_path: Path) -> None:
    program = tmp_path / "pooled.yaml"
    program.write_text(
        "worker_pools:\n  - {name: crawl, queue_name: crawl, min_workers: 1, max_workers: 2}\n"
        "parallel_blocks:\n  - {name: b, steps: [{target: fetch_page, url: x, worker_pool: crawl}]}\n"
    )
    out = tmp_path / "rendered"
    done = project.cli("deploy", str(program), "--target", "compose", "-A", "proj", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rendered = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert re.search(r"-A[\s\-\"']*proj\b", rendered), rendered  # "-A proj", or a YAML list: "- -A", "- proj"


def test_a_pool_worker_of_the_app_runs_its_steps_and_events_follows_the_app(project: Project) -> None:
    """``namel3ss-celery worker -A proj --pool POOL``: a worker of the project's app, on its broker, taking the
    pool's queue; ``events -A proj`` reads that app's event stream."""
    pool = f"crawl-{uuid.uuid4().hex[:6]}"
    program = project.root / "pooled.yaml"
    program.write_text(
        f"worker_pools:\n  - {{name: {pool}, queue_name: {pool}}}\n"
        f"parallel_blocks:\n  - {{name: b, steps: [{{target: fetch_page, url: x, worker_pool: {pool}}}]}}\n"
    )
    settings = Settings.from_mapping({"CELERY_BROKER_URL": project.env["PROJ_BROKER"]})
    probe = Namel3ssCelery(settings=settings)
    command = [CLI, "worker", "-A", "proj", "--pool", pool, "--program", str(program), "--without-mingle", "-l", "INFO"]
    # Only the project's own settings: no CELERY_BROKER_URL, the app names its broker.
    worker = WorkerProcess("unused", project.env, project.root, command=command, name=pool, cwd=project.root)
    try:
        worker.wait_ready(probe.app)
        ran = project.cli("run", "-A", "proj", str(program), "--timeout", "60")
        assert ran.returncode == 0, ran.stdout + ran.stderr + worker.log()
        assert "1/1 steps ok" in ran.stdout
        assert "n3.step.fetch_page" in worker.log() and f"-Q {pool}" in worker.log()
        (run_id,) = re.findall(r"\(run ([0-9a-f]{32})\)", ran.stdout)
        followed = project.cli("events", "-A", "proj", "--after", "0", "--run-id", run_id, "--limit", "1")
        assert followed.returncode == 0, followed.stderr
        (line,) = followed.stdout.splitlines()
        assert json.loads(line)["event"]["data"]["instance_id"] == run_id, line
    finally:
        worker.stop()
        probe.close()
