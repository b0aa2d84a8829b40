"""Views: POST a report (the workflow starts after the commit), read a report, read a run's status."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST
from namel3ss_celery import BrokerUnavailable, UnknownRun

from reports_site.celery import n3

from . import services
from .models import Report


@require_POST
def create_report(request: HttpRequest) -> JsonResponse:
    """``POST /reports/`` with ``title`` and ``body``: 202 with the report and the run's id, at once; 503 when
    the broker cannot be reached (the report is saved, its workflow not started)."""
    title = request.POST.get("title", "").strip()
    if not title:
        return JsonResponse({"error": "title is required"}, status=400)
    try:
        report, run = services.create_report(title, request.POST.get("body", ""))
    except BrokerUnavailable as exc:  # its message names the broker, without the password
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"report": report.pk, "run": run.id}, status=202)


@require_GET
def report_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """``GET /reports/<pk>/``: the report, with the count once its workflow stored it."""
    report = get_object_or_404(Report, pk=pk)
    return JsonResponse(
        {"report": report.pk, "title": report.title, "status": report.status, "word_count": report.word_count}
    )


@require_GET
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    """``GET /runs/<id>/``: a run's status, read from any process by its id."""
    try:
        status = n3.run(run_id).status()
    except UnknownRun:
        return JsonResponse({"error": f"unknown run {run_id}"}, status=404)
    return JsonResponse({"run": run_id, "status": str(status)})
