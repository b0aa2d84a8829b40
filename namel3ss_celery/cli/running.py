"""``namel3ss-celery run``, ``status`` and ``cancel``: dispatch a program's workflows, wait with progress, print
outcomes; show or cancel a run dispatched from anywhere."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..compiler.checks import check_context
from ..errors import ConfigurationError, SpecError, UnknownRun, WaitTimeout
from ..extension import Namel3ssCelery
from ..local import LocalExecutor
from ..results import ParallelExecutionResult, RunStatus, WorkflowResult
from ..runs import NodeProgress, RunHandle, RunResult, check_timeout
from ..spec import ProgramSpec, load_program
from .common import EXIT_FAILED, EXIT_OK, namel3ss

PROGRESS_EVERY = 0.25  # seconds between progress updates
IDLE_FIRST, IDLE_EVERY = 2.0, 5.0  # seconds before the first look for queues nobody consumes, and between looks


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Check every workflow of the file (nothing is published on an error), then dispatch and wait for each."""
    program = load_program(args.file)
    try:
        context = check_context(json.loads(args.context))
    except json.JSONDecodeError as exc:
        raise SpecError(f"--context is not JSON: {exc}", path="context") from exc
    n3 = namel3ss(args)
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
                    result = wait(handle, args.timeout, sys.stderr)
                except WaitTimeout as exc:
                    goes_on = "" if n3.settings.embedded else f"; it goes on (namel3ss-celery cancel {run_id} ends it)"
                    print(f"error: {exc}{goes_on}", file=sys.stderr)
                    return EXIT_FAILED
            if result.overall_status != RunStatus.COMPLETED:
                status = EXIT_FAILED
            if args.json:
                results.append(result.to_dict())
            else:
                print_result(run_id, plan.kind, plan.name, result, out)
        if args.json:
            json.dump(results, out, indent=2, default=str)
            out.write("\n")
        return status
    finally:
        n3.close()


def cancel(args: argparse.Namespace, out: TextIO) -> int:
    """Cancel a run dispatched from anywhere, then wait (``--wait`` seconds) until it has ended: exit 0 when
    it ended cancelled (or had ended already), 1 when it did not end in time or is unknown."""
    check_timeout(args.wait)  # before anything is sent

    def cancelled(handle: RunHandle) -> int:
        before = handle.status()
        if before.final:
            out.write(f"run {args.run_id}: already {before}\n")
            return EXIT_OK
        handle.cancel()
        try:
            result = handle.get(timeout=args.wait)
        except WaitTimeout as exc:
            print(f"error: cancel asked; {exc}", file=sys.stderr)
            return EXIT_FAILED
        out.write(f"run {args.run_id}: {result.overall_status}\n")
        return EXIT_OK

    return _on_run(args, lambda _n3, handle: cancelled(handle))


def status(args: argparse.Namespace, out: TextIO) -> int:
    """A run's result when it ended; else each node's progress, and the queues nobody consumes."""

    def shown(n3: Namel3ssCelery, handle: RunHandle) -> int:
        now = handle.status()
        if now.final:
            result = handle.get(timeout=5)
            if args.json:
                json.dump(result.to_dict(), out, indent=2, default=str)
                out.write("\n")
            else:
                record = n3.store.run_record(args.run_id) or {}
                print_result(args.run_id, record.get("kind", "run"), record.get("name", ""), result, out)
            return EXIT_OK if now == RunStatus.COMPLETED else EXIT_FAILED
        rows = handle.progress()
        idle = handle.idle_queues()
        if args.json:
            report = {"status": str(now), "progress": [r.__dict__ for r in rows], "idle_queues": idle}
            json.dump(report, out, indent=2)
            out.write("\n")
        else:
            out.write(f"run {args.run_id}: {now}\n")
            for row in rows:
                out.write(f"  {row.node:<24} {row.done}/{row.total} steps  {row.state}\n")
            for queue, waiting in idle.items():
                out.write(f"  no worker consumes queue {queue!r}, where {' and '.join(waiting)} waits\n")
        return EXIT_OK

    return _on_run(args, shown)


def _on_run(args: argparse.Namespace, act: Callable[[Namel3ssCelery, RunHandle], int]) -> int:
    """``act`` on run ``args.run_id``, read from the coordination store of the broker it was dispatched on
    (never the embedded default, whose runs live in another process's memory: a ``ConfigurationError``, exit
    2); its exit status, or 1 for an unknown run."""
    n3 = namel3ss(args)
    try:
        if n3.settings.embedded:
            raise ConfigurationError(
                f"{args.command} reads a run from the coordination store of the broker it was dispatched on, and "
                "no broker was given: give --broker (or CELERY_BROKER_URL), or -A/--app",
                setting="broker_url",
            )
        return act(n3, n3.run(args.run_id))
    except UnknownRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        n3.close()


def wait(handle: RunHandle, timeout: float, err: TextIO) -> RunResult:
    """Wait for the run, showing progress on ``err``: a bar on a terminal, a line per change otherwise.

    The line names the queues the run waits on that no worker consumes (looked at after ``IDLE_FIRST``
    seconds, then every ``IDLE_EVERY``).

    Raises:
        WaitTimeout: the run did not end within ``timeout`` seconds (naming the queues nobody consumes).
    """
    tty = err.isatty()
    began = time.monotonic()
    deadline = began + timeout
    shown, idle, next_look = "", "", began + IDLE_FIRST
    while True:
        try:
            result = handle.get(timeout=min(PROGRESS_EVERY, max(deadline - time.monotonic(), 0.0)))
        except WaitTimeout:
            if time.monotonic() >= deadline:
                raise WaitTimeout(handle.id, timeout, str(handle.status()), handle.idle_queues()) from None
            if time.monotonic() >= next_look:
                idle = "".join(f"  (no worker consumes queue {q!r})" for q in handle.idle_queues())
                next_look = time.monotonic() + IDLE_EVERY
            line = progress_line(handle.progress(), bar=tty) + idle
            if line != shown:
                err.write(("\r" + line) if tty else line + "\n")
                err.flush()
                shown = line
            continue
        if tty and shown:
            err.write("\n")
        return result


def progress_line(rows: list[NodeProgress], bar: bool) -> str:
    """``progress: 3/11 steps  fetch 3/3 completed  ...``, or the same behind a bar on a terminal."""
    done, total = sum(r.done for r in rows), sum(r.total for r in rows)
    parts = "  ".join(f"{r.node} {r.done}/{r.total} {r.state}" for r in rows if r.state != "waiting")
    if not bar:
        return f"progress: {done}/{total} steps  {parts}"
    width = 30
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {parts}"[:160]


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


def print_result(run_id: str, kind: str, name: str, result: RunResult, out: TextIO) -> None:
    """A run's outcome: a line for the run, one per block, each failed step's error, the final result."""
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
