"""``namel3ss-celery events``: follow the deployment's events, or serve them over WebSocket (``--serve``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import ConfigurationError
from ..events.server import TOKEN_ENV, Selection, run_server
from ..spec import load_program
from .common import EXIT_OK, namel3ss


def events(args: argparse.Namespace, out: TextIO) -> int:
    """Print each event as a JSON line as it arrives (``--limit``: stop after that many), or ``--serve``."""
    n3 = namel3ss(args)
    try:
        if n3.settings.embedded and not args.app:
            raise ConfigurationError(
                "the event stream lives in the coordination store (Redis): give --broker (or CELERY_BROKER_URL), "
                "or -A/--app",
                setting="broker_url",
            )
        store = n3.events.store()
        if args.serve:
            _check_serve_extra()
            token = args.token or os.environ.get(TOKEN_ENV) or None
            run_server(store, args.host, args.port, token, args.insecure, runs=n3.store, metrics=_metrics(n3, args))
            return EXIT_OK
        selection = Selection(args.run_id, args.workflow, frozenset(args.event_type), args.after)
        shown = 0
        for stream_id, event in n3.events(after=selection.after):
            if selection.wants(event):
                out.write(json.dumps({"id": stream_id, "event": event.to_dict()}) + "\n")
                out.flush()
                shown += 1
                if args.limit is not None and shown >= args.limit:
                    break
        return EXIT_OK
    finally:
        n3.close()


def _check_serve_extra() -> None:
    """``--serve`` needs the events extra (websockets, prometheus-client): a clear error where it is missing."""
    missing = [name for name in ("websockets", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"events --serve needs the events extra: pip install 'namel3ss-celery[events]' "
            f"({', '.join(missing)} not installed)",
            setting="events",
        )


def _metrics(n3: Any, args: argparse.Namespace) -> Any:
    """The run metrics (``events.metrics``: prometheus-client, the events extra), with the depth of the queues
    of ``--program`` (or the app's program)."""
    from ..events.metrics import RunMetrics, queue_depths

    program_file = args.program or n3.settings.program
    if not program_file:
        return RunMetrics()
    program = load_program(program_file)
    pools = [pool.queue_name for pool in program.worker_pools]
    dead = [queue.dead_letter_queue for queue in program.task_queues if queue.dead_letter_queue]
    return RunMetrics(queue_depths(n3.app, pools, dead))


def add_events_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The ``events`` subcommand (``command`` makes a subparser that takes ``-A/--app``)."""
    sub = command("events", "follow the deployment's events (JSON lines), or serve them over WebSocket")
    sub.add_argument(
        "--serve",
        action="store_true",
        help="serve the stream over WebSocket at ws://HOST:PORT/events, and the run view at http://HOST:PORT/",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765)")
    sub.add_argument("--token", help=f"a token clients must send (needed beyond 127.0.0.1; default: {TOKEN_ENV})")
    sub.add_argument("--insecure", action="store_true", help="serve beyond 127.0.0.1 without a token")
    sub.add_argument("--broker", help="Celery broker URL (default: CELERY_BROKER_URL); not with -A")
    sub.add_argument("--backend", help="Celery result backend URL (default: CELERY_RESULT_BACKEND); not with -A")
    sub.add_argument(
        "--program", help="program whose pool and dead-letter queues /metrics counts (default: NAMEL3SS_CELERY_PROGRAM)"
    )
    sub.add_argument("--run-id", help="only the events of this run")
    sub.add_argument("--workflow", help="only the events of this workflow (or block)")
    sub.add_argument("--event-type", action="append", default=[], help="only events of this type (repeatable)")
    sub.add_argument("--after", default="$", help="start after this stream id (0: the oldest kept; default: now)")
    sub.add_argument("--limit", type=int, help="stop after this many events")
    sub.set_defaults(handler=events)
