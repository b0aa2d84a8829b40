"""Reports: a row saved by a request, and a Namel3ss workflow that works on it on a Celery worker."""
