"""Django in the test process, configured once per session like the example project (examples/django_project).

Django's settings can be configured only once per process, so the unit and the
integration tests share this: ``settings.configure()`` with the example's
settings and a SQLite file of the session. Nothing is put in ``os.environ``
(no ``DJANGO_SETTINGS_MODULE``): the worker subprocesses get that in their own
environment. Tests that do not ask for Django never configure it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .integration.workers import REPO

PROJECT = REPO / "examples" / "django_project"


def setup_django(db_path: Path) -> Path:
    """Configure Django as the example project, on ``db_path`` unless it already is; migrate; return the DB path."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    if str(PROJECT) not in sys.path:
        sys.path.append(str(PROJECT))  # appended: the example's packages never shadow installed ones
    if not settings.configured:
        from reports_site import settings as example

        values: dict[str, Any] = {name: getattr(example, name) for name in dir(example) if name.isupper()}
        values["DATABASES"] = {"default": {**values["DATABASES"]["default"], "NAME": str(db_path)}}
        settings.configure(**values)
        django.setup()
        call_command("migrate", verbosity=0)
    return Path(settings.DATABASES["default"]["NAME"])
