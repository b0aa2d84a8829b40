"""``any_success``: ``group(steps)``; the first success claims the block, as in ``race``.

A failure decides nothing until every step has failed: then the block fails
with every step's error.
"""

from __future__ import annotations

from .collect import build

__all__ = ["build"]
