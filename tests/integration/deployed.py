"""A worker's command line, environment and working directory, read from a rendered deploy file as the
program that runs it reads them: systemd from a unit, docker compose from a service, the kubelet from a
Deployment's container. Each reader refuses what it would have to expand and cannot (a specifier, a
variable), so a test runs exactly what the file says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Launch:
    """What starts one service: argv, its environment (the file's alone), its working directory, and the
    variables the file asks the operator for (compose's ``${NAME:?...}``, a Kubernetes Secret)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    asked: tuple[str, ...] = ()


ASKED = re.compile(r"\$\{(\w+):\?[^}]*\}\Z")  # compose refuses to start while NAME is unset


def systemd_words(text: str) -> list[str]:
    """A unit's value split into words as systemd splits ExecStart and Environment: whitespace outside
    quotes, backslash escapes, then ``%%`` to ``%`` (any other specifier is refused)."""
    words: list[str] = []
    word: list[str] | None = None
    quote = ""
    chars = iter(text)
    for char in chars:
        if char == "\\":
            word = (word or []) + [next(chars)]
        elif quote:
            if char == quote:
                quote = ""
            else:
                word = (word or []) + [char]
        elif char in "\"'":
            quote, word = char, word or []
        elif char.isspace():
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = (word or []) + [char]
    assert not quote, f"unterminated quote in {text!r}"
    if word is not None:
        words.append("".join(word))
    return [_specifiers(w) for w in words]


def _specifiers(word: str) -> str:
    assert not re.search(r"%[^%]", word.replace("%%", "")), f"systemd would expand a specifier in {word!r}"
    return word.replace("%%", "%")


def from_unit(text: str) -> Launch:
    """A systemd service: ExecStart (``$$`` is a ``$``), Environment= lines in order, WorkingDirectory."""
    service: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service.append((key, value))
    [exec_start] = [value for key, value in service if key == "ExecStart"]
    argv = []
    for word in systemd_words(exec_start):
        assert not re.search(r"\$[^$]", word.replace("$$", "")), f"systemd would expand a variable in {word!r}"
        argv.append(word.replace("$$", "$"))
    env = {}
    for key, value in service:
        if key == "Environment":
            for assignment in systemd_words(value):
                name, _, setting = assignment.partition("=")
                env[name] = setting
    [cwd] = [value for key, value in service if key == "WorkingDirectory"]
    return Launch(argv, env, _specifiers(cwd))


def _compose_literal(value: Any) -> str:
    text = str(value)
    assert not re.search(r"\$[^$]", text.replace("$$", "")), f"compose would interpolate {text!r}"
    return text.replace("$$", "$")


def from_compose(text: str, service: str) -> Launch:
    """A compose service: command, environment (``$$`` is a ``$``), working_dir."""
    found = yaml.safe_load(text)["services"][service]
    argv = [_compose_literal(word) for word in found["command"]]
    asked = {name for name, value in found["environment"].items() if (m := ASKED.match(str(value))) and m[1] == name}
    env = {name: _compose_literal(value) for name, value in found["environment"].items() if name not in asked}
    return Launch(argv, env, found["working_dir"], tuple(sorted(asked)))


def _kubelet_literal(value: str) -> str:
    assert not re.search(r"(?<!\$)\$\(", value), f"Kubernetes would expand a variable in {value!r}"
    return value.replace("$$(", "$(")


def from_deployment(text: str) -> Launch:
    """A Deployment's only container: command (no args), env values, workingDir."""
    [container] = yaml.safe_load(text)["spec"]["template"]["spec"]["containers"]
    assert "args" not in container
    argv = [_kubelet_literal(word) for word in container["command"]]
    env = {item["name"]: _kubelet_literal(item["value"]) for item in container["env"] if "value" in item}
    asked = tuple(item["name"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {}))
    return Launch(argv, env, container["workingDir"], asked)


def read(folder: Path, target: str, pool: str) -> Launch:
    """The launch of pool ``pool``'s worker from the files rendered for ``target`` in ``folder``."""
    return read_service(folder, target, f"worker-{pool}")


def read_service(folder: Path, target: str, service: str) -> Launch:
    """The launch of ``service`` (``worker-<pool>``, ``beat``, ``events``) from the files rendered for
    ``target`` in ``folder``."""
    if target == "systemd":
        return from_unit((folder / f"namel3ss-celery-{service}.service").read_text())
    if target == "compose":
        return from_compose((folder / "compose.yaml").read_text(), service)
    return from_deployment((folder / f"{service}-deployment.yaml").read_text())
