"""A Dockerfile read as Docker reads it: its instructions in order."""

from __future__ import annotations


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments left out, as Docker parses them."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + "\n"
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        found.append((keyword, arguments))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return found
