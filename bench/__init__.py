"""Benchmarks of namel3ss-celery against hand-written Celery canvas (see bench/README.md)."""
