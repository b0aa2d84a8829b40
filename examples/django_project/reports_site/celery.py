"""The Celery app of reports_site, with namel3ss-celery installed: ``celery -A reports_site worker``."""

from __future__ import annotations

import os

from celery import Celery
from namel3ss_celery import Namel3ssCelery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reports_site.settings")

app = Celery("reports_site")
# CELERY_BROKER_URL and the other CELERY_* settings; NAMEL3SS_CELERY is read from the same settings.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Steps run as the tasks n3.step.<target>, with the app's task class (Django's DjangoTask here).
n3 = Namel3ssCelery(app)
