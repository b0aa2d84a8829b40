"""A step that reads its worker's environment (target ``tests.integration.env_steps:environ``)."""

from __future__ import annotations

import os
from typing import Any


def environ(step: dict[str, Any], context: dict[str, Any]) -> str | None:
    """The value of the environment variable ``step["variable"]`` in the process that runs the step."""
    return os.environ.get(str(step["variable"]))
