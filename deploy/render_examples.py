"""Regenerate the deployment files shipped under deploy/examples/ from the example programs.

    python deploy/render_examples.py

Each program renders for every target into ``deploy/examples/<program>/<target>/``;
files a target no longer produces are removed. A unit test checks the shipped
files are exactly what ``namel3ss_celery.deploy.render`` gives today.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "examples"
PROGRAMS = {"pools": ROOT / "examples" / "pools.yaml"}
STEP_MODULES = ("examples.steps",)  # the steps of the example programs

sys.path.insert(0, str(ROOT))

from namel3ss_celery.deploy import Target, render  # noqa: E402
from namel3ss_celery.spec import load_program  # noqa: E402


def rendered() -> dict[Path, str]:
    """Every example file, by its path relative to ``deploy/examples``."""
    files: dict[Path, str] = {}
    for name, source in PROGRAMS.items():
        program = load_program(source)
        for target in Target:
            path = str(source.relative_to(ROOT))  # relative to the project's directory, where the workers run
            out = OUT / name / target.value
            options = {"program_path": path, "step_modules": STEP_MODULES, "out": out.relative_to(ROOT).as_posix()}
            for file_name, text in render(program, target.value, **options).items():
                files[Path(name) / target.value / file_name] = text
    return files


def main() -> int:
    files = rendered()
    for name in PROGRAMS:
        for stale in sorted((OUT / name).rglob("*")):
            if stale.is_file() and stale.relative_to(OUT) not in files:
                stale.unlink()
                print(f"removed {stale.relative_to(ROOT)}")
    for path, text in files.items():
        target = OUT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
