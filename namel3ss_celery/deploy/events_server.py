"""The events server of a deployment: ``namel3ss-celery events --serve``, rendered where the program has
event triggers or handlers.

It listens on every address of its host or pod (``0.0.0.0``, port 8765) and so always asks clients for a
token (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``), read from ``NAMEL3SS_CELERY_EVENTS_TOKEN``:
never on the command line, never ``--insecure``. Without the variable the server refuses to start. Compose
takes it from the shell's environment (or ``.env``), Kubernetes from the Secret ``namel3ss-celery-events``
(key ``token``), systemd from the environment file.
"""

from __future__ import annotations

from ..events.server import TOKEN_ENV
from ..spec import ProgramSpec
from .common import Deployment

EVENTS_HOST = "0.0.0.0"  # every address: the token guards it
EVENTS_PORT = 8765
SECRET_NAME = "namel3ss-celery-events"  # Kubernetes: the Secret holding the token
SECRET_KEY = "token"

__all__ = ["EVENTS_PORT", "SECRET_KEY", "SECRET_NAME", "TOKEN_ENV", "events_command", "serves_events"]


def serves_events(program: ProgramSpec) -> bool:
    """Whether the program has event triggers or handlers (schedules included): then it gets a server."""
    return bool(program.event_triggers or program.event_handlers)


def events_command(deployment: Deployment) -> list[str]:
    """``namel3ss-celery events --serve`` on every address, as argv (the token comes from its variable)."""
    where = ["--host", EVENTS_HOST, "--port", str(EVENTS_PORT)]
    return [deployment.namel3ss, "events", "--serve", "-A", deployment.app, *where]
