"""The README's first example runs as pasted, on the embedded default, and prints what the README shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .workers import REPO


def first_example() -> tuple[str, str]:
    """The README's first Python block, and the output block that follows it."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```\s*```\n(.*?)```", text, re.S)
    assert match, "the README has no Python example followed by its output"
    return match.group(1), match.group(2)


def test_the_first_example_runs_as_pasted(tmp_path: Path) -> None:
    code, shown = first_example()
    (tmp_path / "example.py").write_text(code)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
    ran = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == shown.splitlines()[0]  # the winner's answer
    assert "  small: completed, won" in lines
    assert any(line.startswith("  big: cancelled, stop") for line in lines)  # stopping, or stopped already
