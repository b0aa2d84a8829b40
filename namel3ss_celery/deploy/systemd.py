"""systemd units: one ``namel3ss-celery-worker-<pool>.service`` per pool, and one for beat."""

from __future__ import annotations

import re

from ..errors import RoutingError
from ..routing import stop_timeout
from ..routing.policy import seconds_text
from ..spec import ProgramSpec, WorkerPoolSpec
from .common import (
    GENERATED,
    beat_command,
    beat_environment,
    deployable_pools,
    worker_command,
    worker_environment,
)

ENVIRONMENT_FILE = "/etc/namel3ss-celery/environment"  # optional; overrides Environment= (put secrets here)
STATE_DIRECTORY = "namel3ss-celery"  # /var/lib/namel3ss-celery, where beat keeps its schedule
USER = "celery"
NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")


def render(program: ProgramSpec, app: str, broker_url: str, program_path: str) -> dict[str, str]:
    """The unit files, by file name.

    Raises:
        RoutingError: a pool cannot run as asked (see ``worker_argv``), or an
            environment value holds a line break.
    """
    files: dict[str, str] = {}
    for pool in deployable_pools(program):
        files[f"namel3ss-celery-worker-{pool.name}.service"] = _unit(
            f"Namel3ss Celery worker, pool {pool.name} (queue {pool.queue_name})",
            worker_environment(program, pool, broker_url, program_path),
            worker_command(program, pool, app, broker_url),
            pool,
        )
    schedule = f"/var/lib/{STATE_DIRECTORY}/celerybeat-schedule"
    files["namel3ss-celery-beat.service"] = _unit(
        "Namel3ss Celery beat (the program's schedules; run one per deployment)",
        beat_environment(broker_url, program_path),
        beat_command(app, schedule),
        None,
    )
    return files


def _unit(description: str, env: dict[str, str], argv: list[str], pool: WorkerPoolSpec | None) -> str:
    service = ["Type=simple", f"User={USER}", f"Group={USER}"]
    service += [f"Environment={_environment(name, value)}" for name, value in env.items()]
    service += [f"EnvironmentFile=-{ENVIRONMENT_FILE}", f"ExecStart=/usr/bin/env {' '.join(map(_word, argv))}"]
    # SIGTERM to the main process only: Celery's warm shutdown lets running steps finish.
    service += ["KillMode=mixed", "KillSignal=SIGTERM"]
    stop = stop_timeout(pool) if pool is not None else None
    if stop is not None:
        service.append(f"TimeoutStopSec={seconds_text(stop)}")
    if pool is None:
        service.append(f"StateDirectory={STATE_DIRECTORY}")
    service += ["Restart=always", "RestartSec=5"]
    sections = [
        ("Unit", [f"Description={description}", "Wants=network-online.target", "After=network-online.target"]),
        ("Service", service),
        ("Install", ["WantedBy=multi-user.target"]),
    ]
    body = "\n\n".join("\n".join([f"[{name}]", *lines]) for name, lines in sections)
    return f"# {GENERATED}\n{body}\n"


def _word(word: str) -> str:
    """One ExecStart word: ``%`` and ``$`` escaped, quoted when systemd would split or unescape it."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not NEEDS_QUOTES.search(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise RoutingError(f"environment variable {name}: a systemd unit cannot hold a value with a line break")
    text = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
