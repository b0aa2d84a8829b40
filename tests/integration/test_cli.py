"""``namel3ss-celery run`` exactly as the README writes it: embedded, then on Redis with a real worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from namel3ss_celery import Namel3ssCelery, Settings
from tests.waiting import wait_until

from .steps import MARKER_TTL, gate_key
from .workers import REPO, WorkerProcess

CLI = shutil.which("namel3ss-celery", path=os.path.dirname(sys.executable)) or "namel3ss-celery"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_", "PYTHONPATH"))}
    return subprocess.run(
        [CLI, *args], cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_the_readme_command_runs_the_pipeline_on_the_embedded_default() -> None:
    out = run_cli("run", "examples/pipeline.yaml", "--steps", "examples.steps")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("program 'program': completed")
    assert any("block search" in line and "all" in line and "3/3 steps ok" in line for line in lines)
    assert any("block total_words" in line and "map_reduce" in line and "completed" in line for line in lines)
    assert any("block checks" in line and "collect" in line and "1/2 steps ok" in line for line in lines)
    assert any("kafka: LookupError: no document named 'kafka'" in line for line in lines)


def test_a_workflow_passes_outputs_along() -> None:
    out = run_cli("run", "examples/research.yaml", "--steps", "examples.steps")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("workflow 'research': completed")
    assert '"sources": ["celery", "rabbitmq"]' in out.stdout


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "program.yaml"
    path.write_text(text)
    return str(path)


def test_a_failed_block_exits_1(tmp_path: Path) -> None:
    program = write(tmp_path, "parallel_blocks:\n  - {name: b, steps: [{target: check_doc, doc: kafka}]}\n")
    out = run_cli("run", program, "--steps", "examples.steps")
    assert out.returncode == 1
    assert "block b" in out.stdout and "failed" in out.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parallel_blocks:\n  - {name: b, strategy: sometimes, steps: []}\n", "parallel_blocks[0].strategy"),
        ("parallel_blocks:\n  - {name: b, steps: [{target: no_such_step}]}\n", "unknown target 'no_such_step'"),
        ("parallel_blocks: [\n", "not valid YAML"),
    ],
)
def test_a_spec_error_exits_2_and_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    out = run_cli("run", write(tmp_path, text), "--steps", "examples.steps")
    assert out.returncode == 2
    assert message in out.stderr


@pytest.mark.integration
def test_the_same_command_sends_work_to_a_redis_worker(redis_url: str, tmp_path: Path) -> None:
    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "examples.steps",
    }
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", env, tmp_path)
    try:
        worker.wait_ready(n3.app)
        out = run_cli(
            "run", "examples/pipeline.yaml", "--steps", "examples.steps", "--broker", redis_url, "--backend", redis_url
        )
        assert out.returncode == 0, out.stderr
        assert "program 'program': completed" in out.stdout
        assert worker.name in worker.log() and "n3.step.word_count" in worker.log()
    finally:
        worker.stop()
        n3.close()


def test_local_runs_in_this_process_with_the_same_outcome() -> None:
    out = run_cli("run", "examples/pipeline.yaml", "--steps", "examples.steps", "--local")
    assert out.returncode == 0, out.stderr
    assert "block checks" in out.stdout and "1/2 steps ok" in out.stdout
    assert "(run local)" in out.stdout


@pytest.mark.integration
def test_status_and_progress_of_a_run_dispatched_elsewhere(redis_url: str, tmp_path: Path) -> None:
    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    n3 = Namel3ssCelery(settings=Settings.from_mapping(env))
    worker = WorkerProcess("namel3ss_celery", {**env, "N3_TEST_BACKEND": redis_url}, tmp_path, concurrency=2)
    gate = uuid.uuid4().hex
    store = redis.Redis.from_url(redis_url)
    try:
        worker.wait_ready(n3.app)
        import tests.integration.steps  # noqa: F401

        # One step reports at once; the two others run until the gate opens, so the status below
        # sees the run midway however long the machine takes to start the command.
        gated = {"target": "gated", "gate": gate}
        steps = [{"target": "patient", "seconds": 0.1}, gated, gated]
        handle = n3.dispatch({"name": "slow", "strategy": "collect", "steps": steps})
        wait_until(
            lambda: handle.progress()[0].done == 1,
            30,
            lambda: f"the first step never reported: {handle.progress()}\n{worker.log()}",
        )
        running = run_cli("status", handle.id, "--broker", redis_url, "--backend", redis_url)
        assert running.returncode == 0, running.stderr
        assert f"run {handle.id}: running" in running.stdout
        assert "slow" in running.stdout and "1/3 steps  running" in running.stdout
        store.set(gate_key(gate), 1, ex=MARKER_TTL)
        handle.get(timeout=30)
        done = run_cli("status", handle.id, "--broker", redis_url, "--backend", redis_url)
        assert done.returncode == 0
        assert "block 'slow': completed" in done.stdout and "3/3 steps ok" in done.stdout
        program = tmp_path / "slow.yaml"
        program.write_text("parallel_blocks:\n  - {name: slow, steps: [{target: patient, seconds: 1.2}]}\n")
        ran = run_cli(
            "run",
            str(program),
            "--steps",
            "tests.integration.steps",
            "--broker",
            redis_url,
            "--backend",
            redis_url,
            env={"PYTHONPATH": str(REPO)},
        )
        assert ran.returncode == 0, ran.stderr
        assert "progress: 0/1 steps  slow 0/1 running" in ran.stderr  # plain lines when not on a terminal
    finally:
        store.set(gate_key(gate), 1, ex=MARKER_TTL)  # a failed check above leaves no step waiting
        store.close()
        worker.stop()
        n3.close()


@pytest.mark.integration
def test_status_right_after_a_cancel_says_cancelled_not_failed(redis_url: str) -> None:
    """No worker takes the run's steps; it is cancelled at once: ``status`` reads it as cancelled, every step
    not started, and nowhere calls a step failed."""
    from .conftest import deployment

    app, n3, queue, _env = deployment(redis_url, redis_url)
    try:
        handle = n3.dispatch({"name": "dropped", "steps": [{"target": "echo", "value": i} for i in range(6)]})
        handle.cancel()
        shown = run_cli("status", handle.id, "--broker", redis_url, "--backend", redis_url)
        as_json = run_cli("status", handle.id, "--json", "--broker", redis_url, "--backend", redis_url)
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)  # the six steps nobody took
        n3.close()
    assert shown.returncode == 1 and as_json.returncode == 1, shown.stderr + as_json.stderr  # not completed
    assert "block 'dropped': cancelled" in shown.stdout and "0/6 steps ok" in shown.stdout, shown.stdout
    assert shown.stdout.count("not started: run cancelled") == 6
    result = json.loads(as_json.stdout)
    assert (result["overall_status"], result["failed_tasks"], result["cancelled_tasks"]) == ("cancelled", 0, 6)
    assert "cancelled" in result["error_message"] and "failed" not in result["error_message"], result
    assert "failed" not in shown.stdout, shown.stdout


@pytest.mark.integration
def test_cancel_ends_a_run_nobody_works_on_and_says_so(redis_url: str) -> None:
    """``run --timeout`` gave up on a run no worker takes; ``cancel`` ends it from another process."""
    from .conftest import deployment

    app, n3, queue, _env = deployment(redis_url, redis_url)
    connection = ["--broker", redis_url, "--backend", redis_url]
    try:
        handle = n3.dispatch({"name": "abandoned", "steps": [{"target": "echo", "value": i} for i in range(3)]})
        cancelled = run_cli("cancel", handle.id, *connection)
        again = run_cli("cancel", handle.id, *connection)
        unknown = run_cli("cancel", "no-such-run", *connection)
        embedded = run_cli("cancel", handle.id)
    finally:
        with app.connection_for_write() as channel_owner:
            channel_owner.default_channel.queue_purge(queue)  # the steps nobody took
        n3.close()
    assert (cancelled.returncode, cancelled.stdout) == (0, f"run {handle.id}: cancelled\n"), cancelled.stderr
    assert (again.returncode, again.stdout) == (0, f"run {handle.id}: already cancelled\n"), again.stderr
    assert unknown.returncode == 1 and "no-such-run" in unknown.stderr
    assert embedded.returncode == 2 and "cancel reads a run from the coordination store" in embedded.stderr
