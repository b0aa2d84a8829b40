"""The one model: a report whose words a workflow counts on a worker."""

from __future__ import annotations

from django.db import models


class Report(models.Model):
    """A report saved by a request; ``run_id`` is the workflow run dispatched when it committed."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    run_id = models.CharField(max_length=32, blank=True)
    word_count = models.IntegerField(null=True)
    status = models.CharField(max_length=20, default="new")

    def __str__(self) -> str:
        return self.title
