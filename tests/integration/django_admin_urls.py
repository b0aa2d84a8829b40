"""The example project's admin alone, as the test process's URLs: resolving ``reports_site.urls`` would import
the views and with them ``reports_site.celery``, which sets ``DJANGO_SETTINGS_MODULE`` in this process (and
every worker it starts later would become a Django worker)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
