"""Dispatch a block on the signing app and print its result as JSON (run as ``python -m``)."""

from __future__ import annotations

import json

import tests.integration.steps  # noqa: F401 - the steps the worker knows
from tests.integration.signed_app import n3

if __name__ == "__main__":
    steps = [{"name": f"s{i}", "target": "echo", "value": i} for i in range(3)]
    result = n3.dispatch({"name": "signed", "strategy": "all", "steps": steps}).get(timeout=60)
    print(json.dumps({"status": str(result.overall_status), "final": result.final_result}))
