"""An example Django project that runs a Namel3ss workflow on Celery when a report is saved.

``reports_site.celery`` holds the Celery app and ``n3``; ``celery -A reports_site worker`` finds it
there, and the code that dispatches imports it (``from reports_site.celery import n3``).
"""
