"""systemd units: one ``namel3ss-celery-worker-<pool>.service`` per pool, one for beat, and one for the
events server where the program has event triggers or handlers (its token, ``NAMEL3SS_CELERY_EVENTS_TOKEN``,
goes in the environment file: without it the server refuses to start).

Each runs ``<venv>/bin/celery`` in the project's directory (``WorkingDirectory``)
with every setting in ``Environment=`` lines; ``EnvironmentFile`` may
override them (put secrets there).
"""

from __future__ import annotations

import re

from ..errors import RoutingError
from ..routing import stop_timeout
from ..routing.policy import seconds_text
from ..spec import ProgramSpec, WorkerPoolSpec
from .common import (
    GENERATED,
    Deployment,
    beat_command,
    deployable_pools,
    events_worker_command,
    service_environment,
    worker_command,
    worker_environment,
)
from .events_server import TOKEN_ENV, events_command

ENVIRONMENT_FILE = "/etc/namel3ss-celery/environment"  # optional; overrides Environment= (put secrets here)
STATE_DIRECTORY = "namel3ss-celery"  # /var/lib/namel3ss-celery, where beat keeps its schedule
USER = "celery"
NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")


def render(program: ProgramSpec, deployment: Deployment) -> dict[str, str]:
    """The unit files, by file name.

    Raises:
        RoutingError: a pool cannot run as asked (see ``worker_argv``), or an
            environment value holds a line break.
    """
    files: dict[str, str] = {}
    for pool in deployable_pools(program):
        files[f"namel3ss-celery-worker-{pool.name}.service"] = _unit(
            f"Namel3ss Celery worker, pool {pool.name} (queue {pool.queue_name})",
            deployment.workdir,
            worker_environment(program, pool, deployment),
            worker_command(program, pool, deployment),
            pool,
        )
    schedule = f"/var/lib/{STATE_DIRECTORY}/celerybeat-schedule"
    files["namel3ss-celery-beat.service"] = _unit(
        "Namel3ss Celery beat (schedules and triggers)",
        deployment.workdir,
        service_environment(deployment),
        beat_command(deployment, schedule),
        None,
    )
    if deployment.serve_events:
        files["namel3ss-celery-events-worker.service"] = _unit(
            "Namel3ss Celery worker of the app's default queue (matches events)",
            deployment.workdir,
            service_environment(deployment),
            events_worker_command(program, deployment),
            None,
            state=False,
        )
        files["namel3ss-celery-events.service"] = _unit(
            f"Namel3ss Celery events server (a token from {TOKEN_ENV} in {ENVIRONMENT_FILE})",
            deployment.workdir,
            service_environment(deployment),
            events_command(deployment),
            None,
            state=False,
        )
    return files


def _unit(
    description: str,
    workdir: str,
    env: dict[str, str],
    argv: list[str],
    pool: WorkerPoolSpec | None,
    state: bool = True,
) -> str:
    service = ["Type=simple", f"User={USER}", f"Group={USER}", f"WorkingDirectory={_path(workdir)}"]
    service += [f"Environment={_environment(name, value)}" for name, value in env.items()]
    service += [f"EnvironmentFile=-{ENVIRONMENT_FILE}", f"ExecStart={' '.join(map(_word, argv))}"]
    # SIGTERM to the main process only: Celery's warm shutdown lets running steps finish.
    service += ["KillMode=mixed", "KillSignal=SIGTERM"]
    stop = stop_timeout(pool) if pool is not None else None
    if stop is not None:
        service.append(f"TimeoutStopSec={seconds_text(stop)}")
    if pool is None and state:
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


def _path(path: str) -> str:
    """A path setting (``WorkingDirectory``): taken as written but for specifiers, so ``%`` doubled."""
    if "\n" in path or "\r" in path:
        raise RoutingError(f"path {path!r}: a systemd unit cannot hold a line break")
    return path.replace("%", "%%")


def _environment(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise RoutingError(f"environment variable {name}: a systemd unit cannot hold a value with a line break")
    text = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
