"""Settings of the reports_site example: SQLite under a var directory, Celery on Redis.

Every value a deployment changes comes from the environment, so the web process,
``manage.py`` and ``celery -A reports_site worker`` agree when started with the same one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the SQLite file lives: REPORTS_SITE_VAR, or a directory under the system's temp dir.
VAR_DIR = Path(os.environ.get("REPORTS_SITE_VAR") or Path(tempfile.gettempdir()) / "reports_site")
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    # The admin (/admin/) shows and edits the schedules: PeriodicTask rows, the program's named n3:<name>.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Schedules in the database: beat runs CELERY_BEAT_SCHEDULER below.
    "django_celery_beat",
    "reports",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "reports_site.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        # The web process and the workers share the file: wait for a lock instead of failing at once.
        # IMMEDIATE (Django 5.1+): a transaction that writes takes the lock at its start, so beat's writes
        # and the web process's never meet half-way (SQLite would refuse one at once, "database is locked").
        "OPTIONS": {"timeout": 20, **({"transaction_mode": "IMMEDIATE"} if django.VERSION >= (5, 1) else {})},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Celery reads every CELERY_* setting (config_from_object(..., namespace="CELERY") in celery.py).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("REPORTS_SITE_QUEUE", "reports_site")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat keeps its entries in django-celery-beat's tables (the admin edits them); n3.schedules writes there too.
CELERY_BEAT_SCHEDULER = "namel3ss_celery.events.django_beat:DatabaseScheduler"

# namel3ss-celery's own settings (the keys of namel3ss_celery.Settings, or their environment names).
# Workers import the step modules at start-up; a dispatching process imports them to check a spec.
NAMEL3SS_CELERY = {
    "step_modules": ["reports.steps"],
}
