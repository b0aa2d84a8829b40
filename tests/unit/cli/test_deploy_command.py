"""``namel3ss-celery deploy`` from a project's directory: the compose file builds the image from that
directory with the Dockerfile it wrote, wherever ``--out`` puts the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from namel3ss_celery.cli import main

PROGRAM = "worker_pools:\n  - {name: crawl, queue_name: crawl}\n"


@pytest.mark.parametrize("out", [None, "ops/compose", "../elsewhere/compose"])
def test_the_compose_file_builds_from_the_project_with_the_dockerfile_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], out: str | None
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pages.yaml").write_text(PROGRAM)
    monkeypatch.chdir(project)
    where = ["--out", out] if out else []
    assert main(["deploy", "pages.yaml", "--target", "compose", "--steps", "proj.steps", *where]) == 0
    folder = project / (out or "deploy/pages/compose")
    assert f"wrote {Path(out or 'deploy/pages/compose') / 'compose.yaml'}" in capsys.readouterr().out
    services = yaml.safe_load((folder / "compose.yaml").read_text())["services"]
    build = services["worker-crawl"]["build"]
    context = (folder / build["context"]).resolve()  # compose reads the context from the file's folder
    assert context == project.resolve()
    assert (context / build["dockerfile"]).resolve() == (folder / "Dockerfile").resolve()
    assert f"docker build -f {build['dockerfile']} -t" in (folder / "Dockerfile").read_text()


def test_wheels_names_the_folder_the_image_installs_namel3ss_celery_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pages.yaml").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    args = ["deploy", "pages.yaml", "--target", "kubernetes", "--steps", "proj.steps"]
    assert main([*args, "--wheels", "vendor"]) == 0
    assert "pip install --find-links vendor " in (tmp_path / "deploy/pages/kubernetes/Dockerfile").read_text()
    assert main([*args, "--wheels", "/opt/wheels"]) == 2
    assert "error: --wheels '/opt/wheels': the image finds the namel3ss-celery wheel in a folder of the project" in (
        capsys.readouterr().err
    )
