"""``namel3ss-celery worker``, ``dlq`` and ``deploy``: run a pool's worker, read dead letters, render deploy files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from ..deploy import DEFAULT_APP, render
from ..errors import ConfigurationError
from ..events.handlers import dead_letter_queues as handler_dead_letter_queues
from ..routing.workers import find_pool, worker_argv, worker_env
from ..spec import TaskQueueSpec, load_program
from ..worker.dead_letters import dead_letter_sources, list_dead_letters, requeue_dead_letters
from .common import EXIT_FAILED, EXIT_OK, celery_app, namel3ss, settings


def worker(args: argparse.Namespace, out: TextIO) -> int:
    """Replace this process with ``celery -A APP worker`` for the pool, its queue, limits and environment.

    The default app takes its broker and result backend from ``--broker``/``--backend`` (or the
    environment); another app (``-A proj``) is found first, and its workers use its own.
    """
    found = settings(args)
    program_file = args.program or found.program
    if not program_file:
        raise ConfigurationError("give --program (or NAMEL3SS_CELERY_PROGRAM)", setting="NAMEL3SS_CELERY_PROGRAM")
    connection: dict[str, str] = {}
    if args.app == DEFAULT_APP:
        if found.embedded:
            raise ConfigurationError("a pool worker needs a broker: give --broker (or CELERY_BROKER_URL)", "broker_url")
        broker = connection["CELERY_BROKER_URL"] = str(found.broker_url)
        if found.result_backend:
            connection["CELERY_RESULT_BACKEND"] = found.result_backend
    else:
        broker = str(celery_app(args).conf.broker_url or "")
        if not broker or broker.startswith("memory://"):
            raise ConfigurationError(
                f"--app {args.app} has no broker a pool worker can share: set its broker_url (or CELERY_BROKER_URL)",
                "broker_url",
            )
    program = load_program(program_file)
    pool = find_pool(program, args.pool)
    options = worker_argv(program, pool.name, broker)
    env = {
        **os.environ,
        **worker_env(pool),
        **connection,
        "NAMEL3SS_CELERY_PROGRAM": os.path.abspath(program_file),
        "NAMEL3SS_CELERY_POOL": pool.name,
        "NAMEL3SS_CELERY_STEP_MODULES": ",".join(found.step_modules),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    if args.region:
        env["NAMEL3SS_CELERY_REGION"] = args.region
    command = [sys.executable, "-m", "celery", "-A", args.app, "worker", *options, *args.celery_args]
    print(" ".join(command), file=sys.stderr, flush=True)
    os.execve(sys.executable, command, env)
    return EXIT_FAILED  # pragma: no cover - execve does not return


def dlq(args: argparse.Namespace, out: TextIO) -> int:
    """``dlq list``: what is in each dead-letter queue (the program's task queues' and event handlers'), with its
    error; ``dlq requeue``: run those steps (or handlers) again."""
    n3 = namel3ss(args)
    try:
        if n3.settings.embedded:
            raise ConfigurationError(
                "dead-letter queues live on a broker: give --broker (or CELERY_BROKER_URL), or -A/--app",
                "broker_url",
            )
        program_file = args.program or n3.settings.program
        program = load_program(program_file) if program_file else None
        sources = dead_letter_sources(program) if program is not None else {}
        handled = handler_dead_letter_queues(program) if program is not None else []
        queues = args.queue or sorted(set(sources) | set(handled))
        if not queues:
            raise ConfigurationError(
                "no dead-letter queue to read: give --queue NAME, or a --program whose task queues or event "
                "handlers set dead_letter_queue",
                setting="NAMEL3SS_CELERY_PROGRAM",
            )
        default_max = int(TaskQueueSpec.model_fields["max_dead_letter_retries"].default)
        report: dict[str, list[dict[str, Any]]] = {}
        for queue in queues:
            if args.action == "list":
                report[queue] = [asdict(letter) for letter in list_dead_letters(n3.app, queue, args.limit)]
            else:
                limit = sources[queue].max_dead_letter_retries if queue in sources else default_max
                report[queue] = [asdict(r) for r in requeue_dead_letters(n3.app, queue, limit, args.limit)]
    finally:
        n3.close()
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
        return EXIT_OK
    for queue, rows in report.items():
        out.write(f"{queue}: {len(rows)} {'dead letters' if args.action == 'list' else 'requeued or kept'}\n")
        for row in rows:
            letter = row.get("dead_letter", row)
            out.write(
                f"  {letter['task_id']}  {letter['task']}  run {letter['run']} block {letter['node']} "
                f"step {letter['step']}  from {letter['queue']}  requeued {letter['requeues']}x\n"
                f"    error: {letter['error']}\n"
            )
            if "task_id" in row and row is not letter:
                done = f"requeued as {row['task_id']}" if row["task_id"] else f"kept: {row['kept_because']}"
                out.write(f"    {done}\n")
    return EXIT_OK


def deploy(args: argparse.Namespace, out: TextIO) -> int:
    """Write the deploy files of ``--target`` for the program's worker pools."""
    program = load_program(args.file)
    inside = os.path.relpath(args.file)  # the project's files keep their places under --workdir
    folder = Path(args.out or Path("deploy") / (program.name or Path(args.file).stem) / args.target)
    files = render(
        program,
        args.target,
        app=args.app,
        broker_url=args.broker,
        program_path=args.program_path or (args.file if inside.startswith("..") else inside),
        result_backend=args.backend,
        step_modules=args.steps,
        workdir=args.workdir,
        image=args.image,
        venv=args.venv,
        out=Path(os.path.relpath(folder)).as_posix(),  # from the project's directory, where this runs
        wheels=args.wheels,
    )
    for name, text in sorted(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out.write(f"wrote {path}\n")
    return EXIT_OK
