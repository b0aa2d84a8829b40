"""A pool's ``allowed_tools`` and ``allowed_agents``: which targets its workers run.

A step of kind ``agent`` is checked against ``allowed_agents``; every other
kind (``tool``, the default) against ``allowed_tools``. An empty list allows
any target of that kind.
"""

from __future__ import annotations

from collections.abc import Sequence

AGENT_KIND = "agent"


def refusal(
    pool: str, kind: str, target: str, allowed_tools: Sequence[str], allowed_agents: Sequence[str]
) -> str | None:
    """Why pool ``pool`` refuses a step of ``kind`` with ``target``, or ``None`` when it allows it."""
    field, allowed = ("allowed_agents", allowed_agents) if kind == AGENT_KIND else ("allowed_tools", allowed_tools)
    if not allowed or target in allowed:
        return None
    return f"worker pool {pool!r} does not allow {kind} target {target!r} ({field}: {', '.join(allowed)})"
