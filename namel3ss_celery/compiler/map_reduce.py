"""``map_reduce``: the same ``chord(group(steps), settle)`` as ``all``.

The difference lives in settle, which applies the block's reducer to the
results in step order (``engine/settle.py``).
"""

from __future__ import annotations

from .all import build

__all__ = ["build"]
