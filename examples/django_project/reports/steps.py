"""The workflow's steps. Workers import this module (NAMEL3SS_CELERY["step_modules"] in settings).

Each step reads the report from the database on the worker: it sees the row only
because the run was published after the transaction that created it committed.
"""

from __future__ import annotations

from typing import Any

from celery import current_task
from namel3ss_celery import step

from .models import Report


@step("reports.count_words")
def count_words(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Read the committed report and count its words."""
    report = Report.objects.get(pk=context["report_id"])
    return {
        "report_id": report.pk,
        "title": report.title,
        "words": len(report.body.split()),
        # The task class Celery ran this step with: the project's (DjangoTask) under namel3ss's step task.
        "task_classes": [f"{cls.__module__}.{cls.__qualname__}" for cls in current_task.__class__.__mro__],
    }


@step("reports.store_count")
def store_count(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Write the count back to the report and mark it ready."""
    counted = context["outputs"]["count"]
    updated = Report.objects.filter(pk=context["report_id"]).update(word_count=counted["words"], status="ready")
    return {"report_id": context["report_id"], "updated": updated}


@step("reports.count_reports")
def count_reports(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """How many reports there are, and how many are ready: the schedule of schedules.yaml runs it."""
    return {"reports": Report.objects.count(), "ready": Report.objects.filter(status="ready").count()}
