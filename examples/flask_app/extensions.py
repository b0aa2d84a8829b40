"""The app's extension objects, made once and bound to each app in ``create_app``."""

from __future__ import annotations

from namel3ss_celery.integrations.flask import Namel3ssFlask

namel3ss = Namel3ssFlask()
