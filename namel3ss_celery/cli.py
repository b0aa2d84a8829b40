"""The ``namel3ss-celery`` command line.

Exit codes: 0 when every run completed, 1 when any did not, 2 on a spec,
compile or configuration error (nothing was published).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from .deploy import render
from .errors import CompileError, ConfigurationError, RoutingError, SpecError, UnknownRun, WaitTimeout
from .extension import Namel3ssCelery
from .local import LocalExecutor
from .results import ParallelExecutionResult, RunStatus, WorkflowResult
from .routing.workers import find_pool, worker_argv, worker_env
from .runs import NodeProgress, RunHandle, RunResult
from .settings import Settings, split_modules
from .spec import ProgramSpec, TaskQueueSpec, load_program
from .worker.dead_letters import dead_letter_sources, list_dead_letters, requeue_dead_letters

EXIT_OK, EXIT_FAILED, EXIT_SPEC = 0, 1, 2
PROGRESS_EVERY = 0.25  # seconds between progress updates


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``namel3ss-celery``."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "worker":  # only `worker` passes options on (to celery worker)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.celery_args = extra
    if args.command is None:
        parser.print_help()
        return EXIT_SPEC
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `celery -A`: the current directory is importable
    try:
        return int(args.handler(args, sys.stdout))
    except (SpecError, CompileError, ConfigurationError, RoutingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SPEC


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namel3ss-celery", description="Run Namel3ss programs on Celery.")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a program file's workflows (or its blocks) and print each outcome")
    run.add_argument("file", help="program file (YAML or JSON)")
    run.add_argument("--workflow", help="run only this workflow")
    run.add_argument(
        "--steps", action="append", default=[], metavar="MODULE", help="module of step functions (repeatable)"
    )
    run.add_argument("--context", default="{}", metavar="JSON", help="context every step receives")
    run.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL, else embedded)")
    run.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each run (default 600)")
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    run.add_argument("--local", action="store_true", help="run in this process with the local executor, no Celery")
    run.set_defaults(handler=_run)
    status = commands.add_parser("status", help="show a run dispatched from anywhere (progress, then its result)")
    status.add_argument("run_id")
    status.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL)")
    status.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND)")
    status.add_argument("--json", action="store_true", help="print the result (or progress) as JSON")
    status.set_defaults(handler=_status)
    worker = commands.add_parser(
        "worker", help="start a Celery worker for one worker pool (other options go to celery worker)"
    )
    worker.add_argument("--pool", required=True, help="the worker pool's name")
    worker.add_argument("--program", help="program file (default: NAMEL3SS_CELERY_PROGRAM)")
    worker.add_argument("--region", help="also consume this region's queue of the pool (locality_aware)")
    worker.add_argument("--steps", action="append", default=[], metavar="MODULE", help="module of step functions")
    worker.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL)")
    worker.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND)")
    worker.add_argument("--app", default="namel3ss_celery", help="the Celery app to run (default: namel3ss_celery)")
    worker.set_defaults(handler=_worker)
    dlq = commands.add_parser("dlq", help="list the steps in dead-letter queues, or requeue them")
    dlq.add_argument("action", choices=["list", "requeue"])
    dlq.add_argument("--program", help="program file (default: NAMEL3SS_CELERY_PROGRAM); its dead_letter_queues")
    dlq.add_argument("--queue", action="append", default=[], help="a dead-letter queue (default: the program's)")
    dlq.add_argument("--limit", type=int, default=100, help="at most this many messages per queue (default 100)")
    dlq.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL)")
    dlq.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND)")
    dlq.add_argument("--json", action="store_true", help="print JSON")
    dlq.set_defaults(handler=_dlq)
    deploy = commands.add_parser("deploy", help="write systemd units, a compose file or Kubernetes manifests")
    deploy.add_argument("file", help="program file (YAML or JSON)")
    deploy.add_argument("--target", required=True, choices=["systemd", "compose", "kubernetes"])
    deploy.add_argument("--out", help="directory to write into (default: deploy/<program>/<target>)")
    deploy.add_argument("--app", default="namel3ss_celery", help="the Celery app the workers run")
    deploy.add_argument("--broker", default="redis://redis:6379/0", help="broker URL the workers use")
    deploy.add_argument("--program-path", help="where the workers find the program file (default: FILE as given)")
    deploy.set_defaults(handler=_deploy)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env().with_step_modules(
        tuple(m for v in getattr(args, "steps", []) for m in split_modules(v))
    )
    if args.broker:
        settings = replace(settings, broker_url=args.broker)
    if args.backend:
        settings = replace(settings, result_backend=args.backend)
    return settings


def _run(args: argparse.Namespace, out: TextIO) -> int:
    program = load_program(args.file)
    try:
        context = json.loads(args.context)
    except json.JSONDecodeError as exc:
        raise SpecError(f"--context is not JSON: {exc}", path="context") from exc
    n3 = Namel3ssCelery(settings=_settings(args))
    try:
        targets = _targets(program, args.workflow)
        plans = [n3.plan(program, workflow) for workflow in targets]  # check everything before publishing anything
        status = EXIT_OK
        results: list[dict[str, Any]] = []
        for plan in plans:
            if args.local:
                run_id = "local"
                executor = LocalExecutor(n3.registry, step_modules=n3.settings.step_modules)
                result = executor.run_sync(plan, context)
            else:
                handle = n3.dispatch(program, context, workflow=plan.name if plan.kind == "workflow" else None)
                run_id = handle.id
                try:
                    result = _wait(handle, args.timeout, sys.stderr)
                except WaitTimeout as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return EXIT_FAILED
            if result.overall_status != RunStatus.COMPLETED:
                status = EXIT_FAILED
            if args.json:
                results.append(result.to_dict())
            else:
                _print_result(run_id, plan.kind, plan.name, result, out)
        if args.json:
            json.dump(results, out, indent=2, default=str)
            out.write("\n")
        return status
    finally:
        n3.close()


def _status(args: argparse.Namespace, out: TextIO) -> int:
    n3 = Namel3ssCelery(settings=_settings(args))
    try:
        handle = n3.run(args.run_id)
        status = handle.status()
        if status.final:
            result = handle.get(timeout=5)
            if args.json:
                json.dump(result.to_dict(), out, indent=2, default=str)
                out.write("\n")
            else:
                record = n3.store.run_record(args.run_id) or {}
                _print_result(args.run_id, record.get("kind", "run"), record.get("name", ""), result, out)
            return EXIT_OK if status == RunStatus.COMPLETED else EXIT_FAILED
        rows = handle.progress()
        if args.json:
            json.dump({"status": str(status), "progress": [r.__dict__ for r in rows]}, out, indent=2)
            out.write("\n")
        else:
            out.write(f"run {args.run_id}: {status}\n")
            for row in rows:
                out.write(f"  {row.node:<24} {row.done}/{row.total} steps  {row.state}\n")
        return EXIT_OK
    except UnknownRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        n3.close()


def _wait(handle: RunHandle, timeout: float, err: TextIO) -> RunResult:
    """Wait for the run, showing progress on ``err``: a bar on a terminal, a line per change otherwise."""
    tty = err.isatty()
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        try:
            result = handle.get(timeout=min(PROGRESS_EVERY, max(deadline - time.monotonic(), 0.01)))
        except WaitTimeout:
            if time.monotonic() >= deadline:
                raise
            line = _progress_line(handle.progress(), bar=tty)
            if line != shown:
                err.write(("\r" + line) if tty else line + "\n")
                err.flush()
                shown = line
            continue
        if tty and shown:
            err.write("\n")
        return result


def _progress_line(rows: list[NodeProgress], bar: bool) -> str:
    done, total = sum(r.done for r in rows), sum(r.total for r in rows)
    parts = "  ".join(f"{r.node} {r.done}/{r.total} {r.state}" for r in rows if r.state != "waiting")
    if not bar:
        return f"progress: {done}/{total} steps  {parts}"
    width = 30
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {parts}"[:160]


def _worker(args: argparse.Namespace, out: TextIO) -> int:
    """Replace this process with ``celery -A APP worker`` for the pool, its queue, limits and environment."""
    settings = _settings(args)
    program_file = args.program or settings.program
    if not program_file:
        raise ConfigurationError("give --program (or NAMEL3SS_CELERY_PROGRAM)", setting="NAMEL3SS_CELERY_PROGRAM")
    if settings.embedded:
        raise ConfigurationError("a pool worker needs a broker: give --broker (or CELERY_BROKER_URL)", "broker_url")
    program = load_program(program_file)
    pool = find_pool(program, args.pool)
    options = worker_argv(program, pool.name, str(settings.broker_url))
    env = {
        **os.environ,
        **worker_env(pool),
        "CELERY_BROKER_URL": str(settings.broker_url),
        "NAMEL3SS_CELERY_PROGRAM": os.path.abspath(program_file),
        "NAMEL3SS_CELERY_POOL": pool.name,
        "NAMEL3SS_CELERY_STEP_MODULES": ",".join(settings.step_modules),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    if settings.result_backend:
        env["CELERY_RESULT_BACKEND"] = settings.result_backend
    if args.region:
        env["NAMEL3SS_CELERY_REGION"] = args.region
    command = [sys.executable, "-m", "celery", "-A", args.app, "worker", *options, *args.celery_args]
    print(" ".join(command), file=sys.stderr, flush=True)
    os.execve(sys.executable, command, env)
    return EXIT_FAILED  # pragma: no cover - execve does not return


def _dlq(args: argparse.Namespace, out: TextIO) -> int:
    """``dlq list``: what is in each dead-letter queue, with its error; ``dlq requeue``: run those steps again."""
    settings = _settings(args)
    if settings.embedded:
        raise ConfigurationError(
            "dead-letter queues live on a broker: give --broker (or CELERY_BROKER_URL)", "broker_url"
        )
    program_file = args.program or settings.program
    sources = dead_letter_sources(load_program(program_file)) if program_file else {}
    queues = args.queue or sorted(sources)
    if not queues:
        raise ConfigurationError(
            "no dead-letter queue to read: give --queue NAME, or a --program whose task queues set dead_letter_queue",
            setting="NAMEL3SS_CELERY_PROGRAM",
        )
    default_max = int(TaskQueueSpec.model_fields["max_dead_letter_retries"].default)
    n3 = Namel3ssCelery(settings=settings)
    report: dict[str, list[dict[str, Any]]] = {}
    try:
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


def _deploy(args: argparse.Namespace, out: TextIO) -> int:
    program = load_program(args.file)
    files = render(
        program, args.target, app=args.app, broker_url=args.broker, program_path=args.program_path or args.file
    )
    folder = Path(args.out or Path("deploy") / (program.name or Path(args.file).stem) / args.target)
    for name, text in sorted(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out.write(f"wrote {path}\n")
    return EXIT_OK


def _targets(program: ProgramSpec, workflow: str | None) -> list[str | None]:
    if workflow is not None:
        if workflow not in {w.name for w in program.workflows}:
            raise SpecError(f"no workflow named {workflow!r} in the program", path="workflows")
        return [workflow]
    if program.workflows:
        return [w.name for w in program.workflows]
    if not program.parallel_blocks:
        raise SpecError("the program has no workflows and no parallel_blocks: nothing to run")
    return [None]


def _print_result(run_id: str, kind: str, name: str, result: RunResult, out: TextIO) -> None:
    blocks = result.blocks if isinstance(result, WorkflowResult) else {result.block_name: result}
    took = f"{result.total_duration_ms / 1000:.2f}s" if result.total_duration_ms is not None else "-"
    out.write(f"{kind} {name!r}: {result.overall_status} in {took} (run {run_id})\n")
    for node, block in blocks.items():
        out.write("  " + _block_line(node, block) + "\n")
        for task in block.results:
            if task.error:
                out.write(f"      {task.task_id}: {task.error}\n")
    if isinstance(result, WorkflowResult):
        if result.failed_node:
            out.write(f"  stopped at node {result.failed_node!r}: {result.error_message}\n")
        else:
            out.write(f"  final result: {json.dumps(result.final_result, default=str)[:200]}\n")


def _block_line(node: str, block: ParallelExecutionResult) -> str:
    took = f"{block.total_duration_ms / 1000:.2f}s" if block.total_duration_ms is not None else "-"
    return (
        f"block {node:<20} {block.strategy:<11} {block.overall_status:<10} "
        f"{block.completed_tasks}/{block.total_tasks} steps ok  {took}"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
