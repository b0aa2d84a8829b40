"""The plugin brings Celery's own fixtures (``celery_app``, ...) where pytest-celery is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("example", ["test_plugin.py", "test_own_app.py"])
def test_the_plugins_examples_pass_without_pytest_celery(example: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:celery",
            "-p",
            "no:cacheprovider",
            str(HERE / example),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE.parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout
