"""``namel3ss-celery beat``: run Celery beat for the program's schedules (one beat per deployment)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from ..compiler.support import check_program_supported
from ..errors import ConfigurationError
from ..events.beat import program_entries
from ..events.matching import check_triggers
from ..spec import load_program
from .common import EXIT_FAILED, settings

# --scheduler names a scheduler class, or one of these.
SCHEDULERS = {
    "default": "celery.beat:PersistentScheduler",
    "redbeat": "namel3ss_celery.events.redbeat:RedBeatScheduler",
    "django": "namel3ss_celery.events.django_beat:DatabaseScheduler",
}
RUNTIME_MAX_INTERVAL = 5  # seconds between reads of RedBeat's or the database's entries (Celery's default: 300)


def beat(args: argparse.Namespace, out: TextIO) -> int:
    """Replace this process with ``celery -A APP beat`` for the program's schedules: the program is checked
    first (a bad cron line, time zone or interval exits 2, naming the field), then passed on as
    ``NAMEL3SS_CELERY_PROGRAM``; its schedules join the app's own ``beat_schedule``."""
    found = settings(args)
    program_file = args.program or found.program
    if not program_file:
        raise ConfigurationError("give --program (or NAMEL3SS_CELERY_PROGRAM)", setting="NAMEL3SS_CELERY_PROGRAM")
    if found.embedded and not args.app:
        raise ConfigurationError("beat needs a broker: give --broker (or CELERY_BROKER_URL), or -A", "broker_url")
    program = load_program(program_file)
    check_program_supported(program)
    check_triggers(program)
    for name, entry in program_entries(program).items():
        print(f"{name}: {entry['schedule']!r} -> {entry['args'][1]}", file=sys.stderr)
    env = {
        **os.environ,
        "NAMEL3SS_CELERY_PROGRAM": os.path.abspath(program_file),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    if args.broker or not args.app:
        env["CELERY_BROKER_URL"] = str(found.broker_url)
    if found.result_backend and (args.backend or not args.app):
        env["CELERY_RESULT_BACKEND"] = found.result_backend
    options = ["--scheduler", SCHEDULERS.get(args.scheduler, args.scheduler)] if args.scheduler else []
    if args.scheduler in ("redbeat", "django") and not any(
        a.startswith(("--max-interval", "-i")) for a in args.celery_args
    ):
        options += ["--max-interval", str(RUNTIME_MAX_INTERVAL)]  # a schedule added at runtime is seen this soon
    command = [sys.executable, "-m", "celery", "-A", args.app, "beat", *options, *args.celery_args]
    print(" ".join(command), file=sys.stderr, flush=True)
    os.execve(sys.executable, command, env)
    return EXIT_FAILED  # pragma: no cover - execve does not return


def add_beat_command(command: argparse.ArgumentParser) -> None:
    """The ``beat`` subcommand's options (``command`` takes ``-A/--app`` already)."""
    command.allow_abbrev = False  # celery beat's own --schedule FILE is not --scheduler
    command.add_argument("--program", help="program file (default: NAMEL3SS_CELERY_PROGRAM); its schedules")
    command.add_argument(
        "--scheduler",
        help="the beat scheduler: default (a schedule file), redbeat (entries in Redis, changed at runtime "
        "with n3.schedules), django (django-celery-beat's tables, edited in the admin or with n3.schedules), or a class (module:Class)",
    )
    command.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL)")
    command.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND)")
    command.set_defaults(handler=beat)
