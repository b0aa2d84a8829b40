"""``namel3ss-celery events --serve`` without the events extra: one clear line, exit 2, no traceback."""

from __future__ import annotations

import importlib.util

import pytest

from namel3ss_celery.cli import main


def test_serve_without_the_events_extra_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "websockets" else real(name, *a))
    assert main(["events", "--serve", "--broker", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: events --serve needs the events extra: pip install 'namel3ss-celery[events]'")
    assert "(websockets not installed)" in err
