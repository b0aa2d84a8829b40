"""The example's steps. They run on Celery workers inside the Flask app context, so ``current_app``
(its config, its extensions) works in them as in a view."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from namel3ss_celery import step


@step("count_words")  # examples/steps.py has its own word_count: targets are one namespace
def count_words(step: dict[str, Any], context: dict[str, Any]) -> int:
    """Words in ``step["text"]``; ``delay`` seconds of pretend work first."""
    time.sleep(float(step.get("delay", 0)))
    return len(str(step.get("text", "")).split())


@step("check_text")
def check_text(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Fails for empty text."""
    text = str(step.get("text", "")).strip()
    if not text:
        raise ValueError("check_text: the text is empty")
    return text


@step("app_info")
def app_info(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Which Flask app this step ran in, and the word counts earlier nodes produced."""
    return {"app": current_app.name, "outputs": context.get("outputs", {})}


def greet(step: dict[str, Any], context: dict[str, Any]) -> str:
    """The app's ``GREETING`` for ``step["who"]`` (registered in ``create_app`` with ``n3.step``)."""
    return f"{current_app.config['GREETING']}, {step.get('who', 'world')}"
