"""What only Celery workers do: the adapter's tasks, the step task and its policies, the stores, Celery shims."""
