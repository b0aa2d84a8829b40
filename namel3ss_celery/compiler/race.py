"""``race``: ``group(steps)``; the first step to finish claims the block on its worker and decides it.

Its success completes the block, its failure fails it. Queued losers see the
claim and never start; running ones are asked to stop (``engine/control.py``).
"""

from __future__ import annotations

from .collect import build

__all__ = ["build"]
