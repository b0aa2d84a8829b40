"""What the commands share: exit codes, settings from the options, and the ``Namel3ssCelery`` they work with."""

from __future__ import annotations

import argparse
from dataclasses import replace

from celery import Celery

from ..errors import ConfigurationError
from ..extension import Namel3ssCelery, install
from ..registry import import_step_modules
from ..settings import Settings, split_modules
from ..worker.compat import find_celery_app

EXIT_OK, EXIT_FAILED, EXIT_SPEC = 0, 1, 2


def step_modules(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules of ``--steps`` (each may list several, comma-separated)."""
    return tuple(m for value in getattr(args, "steps", []) for m in split_modules(value))


def settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with ``--steps``, ``--broker`` and ``--backend`` on top."""
    found = Settings.from_env().with_step_modules(step_modules(args))
    if args.broker:
        found = replace(found, broker_url=args.broker)
    if args.backend:
        found = replace(found, result_backend=args.backend)
    return found


def celery_app(args: argparse.Namespace) -> Celery:
    """The Celery app ``--app`` names, found as ``celery -A`` finds it.

    Raises:
        ConfigurationError: ``--app`` names no Celery app, or comes with ``--broker``/``--backend``.
    """
    if args.broker or args.backend:
        raise ConfigurationError(
            f"--app {args.app} brings its own broker and result backend (its configuration): "
            "drop --broker/--backend, or drop --app",
            setting="app",
        )
    try:
        app = find_celery_app(args.app)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"--app {args.app}: no Celery app found there ({type(exc).__name__}: {exc}); give a module "
            "(proj, proj.celery) or module:attribute (proj.celery:app), as for celery -A",
            setting="app",
        ) from exc
    if not isinstance(app, Celery):
        raise ConfigurationError(f"--app {args.app} names a {type(app).__name__}, not a Celery app", setting="app")
    return app


def namel3ss(args: argparse.Namespace) -> Namel3ssCelery:
    """namel3ss-celery on ``--app`` (installed there now if the app has not done it), with the ``--steps``
    modules added; without ``--app``, on an app made from the settings.

    Raises:
        ConfigurationError: ``--app`` names no Celery app, or comes with ``--broker``/``--backend``.
    """
    if not args.app:
        return Namel3ssCelery(settings=settings(args))
    n3 = install(celery_app(args))
    if step_modules(args):
        import_step_modules(step_modules(args), n3.registry)
    return n3
