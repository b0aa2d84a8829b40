"""Flask: ``Namel3ssFlask``, one extension object for any number of Flask apps.

Like Flask's own Celery pattern (``celery_init_app`` in pallets/flask
``examples/celery``), ``init_app`` builds a Celery app from
``app.config["CELERY"]`` whose tasks run inside the Flask app context, makes
it the default app and keeps it in ``app.extensions["celery"]``; or it takes
the Celery app you pass. It then installs namel3ss-celery on that Celery app
with settings from the ``NAMEL3SS_CELERY_*`` keys of the Flask config, over
the environment. Nothing connects until a worker starts or a run is
dispatched.

Example::

    namel3ss = Namel3ssFlask()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_mapping(
            CELERY={"broker_url": "redis://localhost", "result_backend": "redis://localhost"},
            NAMEL3SS_CELERY_STEP_MODULES="myapp.steps",
        )
        namel3ss.init_app(app)
        return app

    # in a view
    run = namel3ss.n3.dispatch(spec, context={"user": user_id})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, signals
from flask import Flask, current_app, has_app_context
from flask.ctx import AppContext

from ..errors import ConfigurationError
from ..extension import Namel3ssCelery
from ..settings import EMBEDDED_BACKEND, EMBEDDED_BROKER, ENV_KEYS, Settings

EXTENSION_KEY = "namel3ss_celery"
CONFIG_PREFIX = "NAMEL3SS_CELERY_"
TASK_PREFIX = "n3."  # every task namel3ss-celery registers: steps, launch, settles
CONFIG_KEYS = tuple(sorted(env for env in ENV_KEYS.values() if env.startswith(CONFIG_PREFIX)))


@dataclass(frozen=True)
class FlaskState:
    """What ``init_app`` keeps in ``app.extensions["namel3ss_celery"]``.

    Attributes:
        n3: namel3ss-celery installed on the app's Celery app.
        celery: that Celery app (also ``app.extensions["celery"]``).
        context: pushes the app context around namel3ss tasks (``after_return`` included, where
            blocks settle), whether ``init_app`` built the Celery app or you passed yours.
    """

    n3: Namel3ssCelery
    celery: Celery
    context: StepAppContext | None = None


class Namel3ssFlask:
    """The Flask extension: namel3ss-celery on each Flask app's Celery app.

    One object serves several Flask apps (state lives in
    ``app.extensions["namel3ss_celery"]``, as flask-sqlalchemy keeps its own);
    ``n3`` answers for the app of the current app context.

    Args:
        app: a Flask app to initialise now; or call ``init_app`` later (app factories).
        celery: a Celery app to use for ``app`` instead of building one from ``app.config["CELERY"]``.

    Raises:
        ConfigurationError: see ``init_app``.
    """

    def __init__(self, app: Flask | None = None, *, celery: Celery | None = None) -> None:
        if app is not None:
            self.init_app(app, celery=celery)

    def init_app(self, app: Flask, *, celery: Celery | None = None) -> Namel3ssCelery:
        """Install namel3ss-celery for ``app``; calling it again for the same app returns the same one.

        Without ``celery``, builds a Celery app the Flask way: named after the Flask app,
        configured from the ``app.config["CELERY"]`` mapping (with the embedded in-memory
        default when no broker is set there or in ``CELERY_BROKER_URL``), with a task class
        whose calls run inside ``app.app_context()``, set as the default Celery app and kept in
        ``app.extensions["celery"]``, so ``celery -A yourmodule worker`` finds it. With
        ``celery``, that app keeps its own task class; namel3ss tasks run inside the app
        context all the same.

        Args:
            app: the Flask app.
            celery: your own Celery app for this Flask app (one Flask app per Celery app).

        Returns:
            The ``Namel3ssCelery`` of ``app`` (also ``self.n3`` inside its app context).

        Raises:
            ConfigurationError: ``app`` already has namel3ss-celery on another Celery app;
                ``celery`` already has namel3ss-celery installed; a ``NAMEL3SS_CELERY_*`` key
                is unknown; or the Celery app cannot run namel3ss (an ``rpc://`` result
                backend, no Redis for coordination).
        """
        existing = app.extensions.get(EXTENSION_KEY)
        if isinstance(existing, FlaskState):
            if celery is not None and celery is not existing.celery:
                raise ConfigurationError(
                    f"Flask app {app.name!r} already has namel3ss-celery on Celery app {existing.celery.main!r}; "
                    "call init_app once per Flask app, with one Celery app",
                    setting="init_app",
                )
            return existing.n3
        if celery is not None and getattr(celery, "namel3ss", None) is not None:
            raise ConfigurationError(
                f"Celery app {celery.main!r} already has namel3ss-celery installed (by another Flask app or "
                "Namel3ssCelery(app)); give each Flask app its own Celery app, or pass none and let init_app "
                'build one from app.config["CELERY"]',
                setting="init_app",
            )
        if celery is None:
            celery = celery_init_app(app)
        # Around the whole task, after_return included, where namel3ss settles blocks (custom reducers
        # may use current_app): FlaskTask.__call__ alone would not cover it.
        context = StepAppContext(app, celery)
        n3 = Namel3ssCelery(celery, settings=settings_from_config(app.config, celery))
        app.extensions.setdefault("celery", celery)
        app.extensions[EXTENSION_KEY] = FlaskState(n3, celery, context)
        return n3

    @property
    def n3(self) -> Namel3ssCelery:
        """The ``Namel3ssCelery`` of the current Flask app (use it in views, CLI commands, shells).

        Raises:
            ConfigurationError: there is no app context, or its app was never passed to ``init_app``.
        """
        if not has_app_context():
            raise ConfigurationError(
                "Namel3ssFlask.n3 needs a Flask app context: use it inside a request or a CLI command, "
                "or wrap the code in `with app.app_context():`",
                setting="app_context",
            )
        state = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, FlaskState):
            raise ConfigurationError(
                f"Flask app {current_app.name!r} has no namel3ss-celery: call Namel3ssFlask.init_app(app) "
                "(or Namel3ssFlask(app)) when you create it",
                setting="init_app",
            )
        return state.n3


def celery_init_app(app: Flask) -> Celery:
    """A Celery app for ``app``, as in Flask's Celery guide: tasks run inside ``app.app_context()``.

    Configured from the ``app.config["CELERY"]`` mapping (Celery's lowercase setting
    names); with no broker there nor in ``CELERY_BROKER_URL``, the embedded default
    (in-memory broker and backend). Set as the default Celery app and kept in
    ``app.extensions["celery"]``.
    """

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(dict(app.config.get("CELERY") or {}))
    if not celery.conf.broker_url:
        celery.conf.update(
            broker_url=EMBEDDED_BROKER,
            result_backend=celery.conf.result_backend or EMBEDDED_BACKEND,
            # The memory transport polls; its default of 1s per empty poll makes every hop slow.
            broker_transport_options={"polling_interval": 0.005},
        )
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def settings_from_config(
    config: Mapping[str, Any], celery: Celery, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings for ``celery`` with the Flask config's ``NAMEL3SS_CELERY_*`` keys over the environment.

    Broker, backend and expiry are the Celery app's. ``NAMEL3SS_CELERY_STEP_MODULES``
    from the config and from the environment are both imported.

    Raises:
        ConfigurationError: a ``NAMEL3SS_CELERY_*`` key that namel3ss-celery does not know (a typo).
    """
    own = {key: value for key, value in config.items() if key.startswith(CONFIG_PREFIX)}
    unknown = sorted(set(own) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigurationError(
            f"unknown Flask config key {unknown[0]!r}; namel3ss-celery reads {', '.join(CONFIG_KEYS)}",
            setting=unknown[0],
        )
    return Settings.from_app(celery, environ).overridden(own)


class StepAppContext:
    """Runs the namel3ss tasks (``n3.*``) of a Celery app inside the Flask app context.

    The Celery app keeps its own task class; this pushes ``app.app_context()`` on
    ``task_prerun`` and pops it on ``task_postrun``, in the thread that runs the task.
    """

    def __init__(self, app: Flask, celery: Celery) -> None:
        self.app = app
        self.celery = celery
        signals.task_prerun.connect(self._push)  # bound methods are held weakly: FlaskState keeps self
        signals.task_postrun.connect(self._pop)

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.celery and str(getattr(task, "name", "")).startswith(TASK_PREFIX)

    def _push(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            context = self.app.app_context()
            context.push()
            sender.request.n3_flask_context = context

    def _pop(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            context: AppContext | None = getattr(sender.request, "n3_flask_context", None)
            sender.request.n3_flask_context = None
            if context is not None:
                context.pop()
