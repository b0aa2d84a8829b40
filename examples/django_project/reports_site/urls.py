"""URLs of reports_site."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from reports import views

urlpatterns = [
    path("admin/", admin.site.urls),  # the schedules: Periodic tasks, under Periodic Tasks
    path("reports/", views.create_report, name="create-report"),
    path("reports/<int:pk>/", views.report_detail, name="report-detail"),
    path("runs/<str:run_id>/", views.run_status, name="run-status"),
]
