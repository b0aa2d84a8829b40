"""Create a report and start its workflow once the row is committed: shared by the view and the command."""

from __future__ import annotations

from django.db import transaction
from namel3ss_celery import BrokerUnavailable
from namel3ss_celery.integrations.django import PendingRun, dispatch_on_commit

from reports_site.celery import n3

from .models import Report
from .workflows import REPORT_WORKFLOW

NOT_STARTED = "not_started"  # a report saved while the broker could not be reached: no workflow runs for it


def create_report(title: str, body: str) -> tuple[Report, PendingRun]:
    """Save a report and dispatch its workflow; the workflow is published when this transaction commits.

    Raises:
        BrokerUnavailable: the broker cannot be reached; the report is saved, with status ``not_started``
            and no run (the commit raises it, after the row is in).
    """
    try:
        with transaction.atomic():
            report = Report.objects.create(title=title, body=body)
            # Checked now (a bad spec raises here, and the row is rolled back); published after COMMIT.
            run = dispatch_on_commit(n3, REPORT_WORKFLOW, context={"report_id": report.pk})
            report.run_id = run.id
            report.save(update_fields=["run_id"])
    except BrokerUnavailable:
        Report.objects.filter(pk=report.pk).update(status=NOT_STARTED, run_id="")
        raise
    return report, run
