"""The steps of the workflow ``docs/screenshot.py`` runs for the README's picture of the run view.

They pretend: ``ask`` is a model that takes ``seconds`` to answer (and stops when its race is decided),
``fetch`` a page that takes ``seconds`` to load (or fails with ``status``), ``write_report`` a report
from what the other nodes produced.
"""

from __future__ import annotations

import time
from typing import Any

from namel3ss_celery import StepCancelled, cancelled, step


@step("ask")
def ask(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Answers after ``seconds``, in slices; stops when its race no longer needs it."""
    deadline = time.monotonic() + float(step["seconds"])
    while time.monotonic() < deadline:
        if cancelled():
            raise StepCancelled("another model answered first")
        time.sleep(0.01)
    return f"{step['model']} answers {context['question']!r}"


@step("fetch")
def fetch(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Loads ``url`` in ``seconds``; fails when the page answers ``status`` (a 4xx or 5xx)."""
    time.sleep(float(step["seconds"]))
    status = int(step.get("status", 200))
    if status >= 400:
        raise LookupError(f"GET {step['url']}: HTTP {status}")
    return {"url": step["url"], "words": 40 * len(step["url"])}


@step("write_report")
def write_report(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A report from the answer and the pages fetched."""
    outputs = context.get("outputs", {})
    pages = outputs.get("sources") or {}
    return {"answer": outputs.get("answer"), "pages": sum(1 for page in pages.values() if "result" in page)}
