"""What a step's values become: its result checked to be JSON data (as a message to another process carries
it), and an exception told as the one line results carry."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import StepResultError


def describe(exc: BaseException) -> str:
    """``ValueError: bad input`` — the error string results carry."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_PLAIN = (str, int, bool, type(None))  # exact types JSON gives back equal: no round trip needed


def to_json_data(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back; anything JSON cannot carry raises ``StepResultError``.

    A plain value (a string, an integer, a boolean, ``None``, a finite float), or a dict of such values under
    string keys, is given back as the round trip would (the dict copied) without making it."""
    if _plain(value):
        return value
    if type(value) is dict and all(type(k) is str and _plain(v) for k, v in value.items()):
        return dict(value)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        if isinstance(value, float) and not math.isfinite(value):
            raise StepResultError(f"{what} returned {value!r}, which JSON cannot carry") from exc
        raise StepResultError(f"{what} returned a value JSON cannot carry: {exc}") from exc


def _plain(value: Any) -> bool:
    kind = type(value)
    return kind in _PLAIN or (kind is float and math.isfinite(value))
