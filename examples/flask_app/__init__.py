"""A Flask app that hands Namel3ss workflows to Celery workers and reads their runs back.

    flask --app examples.flask_app run                 # the web app
    celery -A examples.flask_app worker -l INFO        # a worker (module-level ``celery_app`` below)

    curl -X POST localhost:5000/runs -H 'Content-Type: application/json' \\
         -d '{"spec": {"name": "count", "steps": [{"target": "count_words", "text": "one two"}]}}'
    curl localhost:5000/runs/<run_id>

Configuration comes from ``FLASK_*`` environment variables (Flask's
``from_prefixed_env``), e.g. ``FLASK_CELERY__broker_url=redis://host:6379/0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import steps
from .extensions import namel3ss
from .views import runs


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app: defaults, then ``FLASK_*`` environment variables, then ``config``."""
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY={
            "broker_url": "redis://localhost:6379/0",
            "result_backend": "redis://localhost:6379/0",
            "task_ignore_result": True,  # the app's own tasks; namel3ss keeps what its runs need
        },
        NAMEL3SS_CELERY_STEP_MODULES="examples.flask_app.steps",
        GREETING="Hello",
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})
    n3 = namel3ss.init_app(app)
    n3.step("greet")(steps.greet)  # a step of this app only; the others in steps.py are module-level
    app.register_blueprint(runs)
    return app


# What `celery -A examples.flask_app worker` runs: the Celery app of a Flask app built here.
# Building it connects to nothing.
celery_app = create_app().extensions["celery"]
