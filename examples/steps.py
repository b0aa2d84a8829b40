"""Step functions used by the example programs.

Load them with ``--steps examples.steps`` (or ``NAMEL3SS_CELERY_STEP_MODULES=examples.steps``
on workers). Registered names (``@step("...")``) and plain module-level functions
(``examples.steps:shout``) both work as targets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from namel3ss_celery import reducer, step

CORPUS = {
    "celery": "Celery is a distributed task queue that runs tasks on workers",
    "redis": "Redis keeps data in memory and serves it fast",
    "rabbitmq": "RabbitMQ routes messages through exchanges into queues",
}


@step("fetch_sources")
async def fetch_sources(step: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """Pretend to search: the corpus entries whose text mentions the query."""
    await asyncio.sleep(0.01)
    query = str(step.get("query", "")).lower()
    return sorted(name for name, text in CORPUS.items() if query in text.lower() or query == name)


@step("word_count")
def word_count(step: dict[str, Any], context: dict[str, Any]) -> int:
    """Words in one corpus document."""
    return len(CORPUS[step["doc"]].split())


@step("keywords")
def keywords(step: dict[str, Any], context: dict[str, Any]) -> dict[str, int]:
    """Long words of one document with their lengths."""
    return {word.lower(): len(word) for word in CORPUS[step["doc"]].split() if len(word) > 6}


@step("check_doc")
def check_doc(step: dict[str, Any], context: dict[str, Any]) -> str:
    """Fails for a document that is not in the corpus."""
    doc = step["doc"]
    if doc not in CORPUS:
        raise LookupError(f"no document named {doc!r}")
    return f"{doc}: ok"


@step("write_report")
def write_report(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A report from what earlier nodes produced."""
    outputs = context.get("outputs", {})
    return {"sources": outputs.get("fetch"), "analysis": outputs.get("analyse")}


@reducer("longest")
def longest(results: list[dict[str, int]]) -> str:
    """The longest keyword over every document."""
    words = [word for result in results for word in result]
    return max(words, key=len) if words else ""


def shout(step: dict[str, Any], context: dict[str, Any]) -> str:
    """A plain module-level function, used as the target ``examples.steps:shout``."""
    return str(step.get("text", "")).upper()
