"""The ``namel3ss-celery`` command line: ``run``, ``status``, ``worker``, ``beat``, ``dlq``, ``events`` and
``deploy``.

Every command takes ``-A/--app`` as ``celery`` does: the steps, configuration and broker of that Celery
app (with namel3ss-celery installed on it, or installed now). Without it, a command works on an app made
from ``--broker``/``--backend`` and the environment (the embedded default when no broker is set).

Exit codes: 0 when every run completed, 1 when any did not, 2 on a spec,
compile or configuration error, or a broker that cannot be reached (nothing was published).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import BrokerUnavailable, CompileError, ConfigurationError, InvalidArgument, RoutingError, SpecError
from .beat import add_beat_command
from .common import EXIT_SPEC
from .events import add_events_command
from .operations import deploy, dlq, worker
from .running import cancel, run, status

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``namel3ss-celery``."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("worker", "beat"):  # they pass options on (to celery worker, beat)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.celery_args = extra
    if args.command is None:
        parser.print_help()
        return EXIT_SPEC
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `celery -A`: the current directory is importable
    try:
        return int(args.handler(args, sys.stdout))
    except (SpecError, CompileError, ConfigurationError, RoutingError, BrokerUnavailable, InvalidArgument) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SPEC


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namel3ss-celery", description="Run Namel3ss programs on Celery.")
    commands = parser.add_subparsers(dest="command")

    def command(name: str, help_text: str, app_default: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "-A",
            "--app",
            default=app_default,
            help="your Celery app, as for celery -A (proj, proj.celery or proj.celery:app): its steps, "
            "configuration and broker" + (f" (default: {app_default})" if app_default else ""),
        )
        return sub

    def connection(sub: argparse.ArgumentParser, embedded: bool = False) -> None:
        otherwise = ", else embedded" if embedded else ""
        sub.add_argument("--broker", help=f"Celery broker URL (default: CELERY_BROKER_URL{otherwise}); not with -A")
        sub.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND); not with -A")

    def step_modules(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--steps", action="append", default=[], metavar="MODULE", help="module of step functions (repeatable)"
        )

    sub = command("run", "run a program file's workflows (or its blocks) and print each outcome")
    sub.add_argument("file", help="program file (YAML or JSON)")
    sub.add_argument("--workflow", help="run only this workflow")
    step_modules(sub)
    sub.add_argument("--context", default="{}", metavar="JSON", help="context every step receives (a JSON object)")
    connection(sub, embedded=True)
    sub.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each run (default 600)")
    sub.add_argument("--json", action="store_true", help="print the results as JSON")
    sub.add_argument("--local", action="store_true", help="run in this process with the local executor, no Celery")
    sub.set_defaults(handler=run)

    sub = command("status", "show a run dispatched from anywhere (progress, then its result)")
    sub.add_argument("run_id")
    connection(sub)
    sub.add_argument("--json", action="store_true", help="print the result (or progress) as JSON")
    sub.set_defaults(handler=status)

    sub = command("cancel", "cancel a run dispatched from anywhere, and wait until it has ended")
    sub.add_argument("run_id")
    connection(sub)
    sub.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it to end (default 30)")
    sub.set_defaults(handler=cancel)

    sub = command(
        "worker", "start a Celery worker for one worker pool (other options go to celery worker)", "namel3ss_celery"
    )
    sub.add_argument("--pool", required=True, help="the worker pool's name")
    sub.add_argument("--program", help="program file (default: NAMEL3SS_CELERY_PROGRAM)")
    sub.add_argument("--region", help="also consume this region's queue of the pool (locality_aware)")
    step_modules(sub)
    connection(sub)
    sub.set_defaults(handler=worker)

    add_beat_command(
        command(
            "beat", "run Celery beat for the program's schedules (other options go to celery beat)", "namel3ss_celery"
        )
    )

    sub = command("dlq", "list the steps in dead-letter queues, or requeue them")
    sub.add_argument("action", choices=["list", "requeue"])
    sub.add_argument("--program", help="program file (default: NAMEL3SS_CELERY_PROGRAM); its dead_letter_queues")
    sub.add_argument("--queue", action="append", default=[], help="a dead-letter queue (default: the program's)")
    sub.add_argument("--limit", type=int, default=100, help="at most this many messages per queue (default 100)")
    connection(sub)
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=dlq)

    add_events_command(command)

    sub = command("deploy", "write systemd units, a compose file or Kubernetes manifests", "namel3ss_celery")
    sub.add_argument("file", help="program file (YAML or JSON)")
    sub.add_argument("--target", required=True, choices=["systemd", "compose", "kubernetes"])
    sub.add_argument("--out", help="directory to write into (default: deploy/<program>/<target>)")
    sub.add_argument("--broker", default="redis://redis:6379/0", help="broker URL the workers use")
    sub.add_argument("--backend", help="result backend URL the workers use (default: the broker, if Redis)")
    step_modules(sub)
    sub.add_argument("--program-path", help="the program file, relative to --workdir (default: FILE)")
    sub.add_argument(
        "--workdir", help="the project's directory the services run in (default: /app; systemd: /srv/namel3ss-celery)"
    )
    sub.add_argument("--image", default="namel3ss-celery-app:latest", help="image built from the rendered Dockerfile")
    sub.add_argument("--venv", help="systemd: virtual environment holding bin/celery (default: WORKDIR/.venv)")
    sub.add_argument(
        "--wheels",
        default="wheels",
        metavar="DIR",
        help="compose, kubernetes: the project's folder holding the namel3ss-celery wheel the image installs "
        "(pip wheel --no-deps --wheel-dir DIR PATH/TO/namel3ss-celery; default: wheels)",
    )
    sub.set_defaults(handler=deploy)
    return parser
