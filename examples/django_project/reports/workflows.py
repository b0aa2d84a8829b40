"""The Namel3ss workflow the reports app dispatches (a WorkflowSpec as a dict; a YAML file works too)."""

from __future__ import annotations

from typing import Any

REPORT_WORKFLOW: dict[str, Any] = {
    "name": "report",
    "steps": [
        {"name": "count", "target": "reports.count_words"},
        {"name": "store", "target": "reports.store_count", "depends_on": ["count"]},
    ],
}
