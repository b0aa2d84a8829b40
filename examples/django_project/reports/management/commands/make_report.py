"""``python manage.py make_report TITLE [--body TEXT] [--wait SECONDS]``: what the view does, from a shell."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports import services


class Command(BaseCommand):
    help = "Create a report and start its word-count workflow after the commit; print the run's id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("title")
        parser.add_argument("--body", default="")
        parser.add_argument("--wait", type=float, default=0, help="wait this many seconds for the run's result")

    def handle(self, *args: Any, **options: Any) -> None:
        report, run = services.create_report(options["title"], options["body"])
        out: dict[str, Any] = {"report": report.pk, "run": run.id, "publication": run.publication.value}
        if options["wait"]:
            result = run.get(timeout=options["wait"])
            out.update(status=str(result.overall_status), final_result=result.final_result)
        self.stdout.write(json.dumps(out))
