"""Bounds on what a spec, a context or a program file may hold, so that bad input fails fast and small.

Each bound is a module constant; an error that enforces one names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_NESTING = 100
"""Containers (dicts, lists) nested in one value: a step's payload key, a metadata value, a context key."""

MAX_DURATION_SECONDS = 30 * 24 * 3600.0
"""30 days: the longest timeout, wait, retention or retry delay (each becomes a deadline or an expiry time)."""

MAX_PROGRAM_BYTES = 10 * 1024 * 1024
"""10 MB: the largest program file read."""

MAX_YAML_NODES = 1_000_000
"""Values a YAML program may hold once its aliases are expanded (a few aliases can expand to billions)."""

MAX_YAML_DEPTH = MAX_NESTING + 20
"""Nesting of a whole YAML document: a spec's own levels plus ``MAX_NESTING`` of payload, with room to spare."""

MAX_PLAN_BYTES = 50 * 1024 * 1024
"""50 MB: the largest plan (as JSON) a run's record stores."""


def nested_too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` holds containers nested more than ``limit`` levels deep (a cycle counts as too deep).

    Walked level by level, not recursively, so a value nested a million levels deep costs no stack; a
    container shared by several parents is walked once per level it appears at.
    """
    level = [value] if is_container(value) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: dict[int, Any] = {}
        for item in level:
            for child in item.values() if isinstance(item, (dict, Mapping)) else item:
                if is_container(child):
                    below[id(child)] = child
        level = list(below.values())
    return False


_LEAVES = frozenset({str, int, float, bool, type(None)})


def is_container(value: Any) -> bool:
    """A mapping, list or tuple (exact builtin types first: most values of a large spec are scalars)."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        return True
    return kind not in _LEAVES and isinstance(value, (Mapping, list, tuple))
