"""The OpenTelemetry setup the README and ``integrations.opentelemetry`` show imports only what
``pip install 'namel3ss-celery[otel]'`` installs, names the span attributes the adapter sets, and parses."""

from __future__ import annotations

import ast
import configparser
import re
import textwrap
from pathlib import Path

import pytest

from namel3ss_celery.integrations import opentelemetry as integration

REPO = Path(__file__).resolve().parents[2]

# Which distribution brings each OpenTelemetry package (the longest prefix wins).
PROVIDERS = {
    "opentelemetry": "opentelemetry-api",
    "opentelemetry.trace": "opentelemetry-api",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "opentelemetry.instrumentation.celery": "opentelemetry-instrumentation-celery",
    "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry.exporter.otlp.proto.grpc": "opentelemetry-exporter-otlp-proto-grpc",
}


def requirement_names(text: str) -> set[str]:
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return {re.split(r"[<>=!~\[; ]", line)[0].lower() for line in lines if line}


def installed_with_otel() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return requirement_names(config["options"]["install_requires"]) | requirement_names(
        config["options.extras_require"]["otel"]
    )


def docstring_example() -> str:
    """The literal block after the module docstring's ``::``: its indented lines (and the blank ones)."""
    doc = integration.__doc__ or ""
    block = []
    for line in doc.split("::\n", 1)[1].splitlines():
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Tracing with OpenTelemetry\n", 1)[1].split("\n## ", 1)[0]
    assert "pip install 'namel3ss-celery[otel]'" in section
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return str(code)


def opentelemetry_imports(code: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "opentelemetry"}


def provider_of(module: str) -> str:
    prefixes = [p for p in PROVIDERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"which distribution brings {module}? (add it to PROVIDERS)"
    return PROVIDERS[max(prefixes, key=len)]


@pytest.mark.parametrize("example", [docstring_example, readme_example], ids=["docstring", "readme"])
def test_the_examples_import_only_what_the_otel_extra_installs(example: object) -> None:
    assert callable(example)
    code = example()
    imports = opentelemetry_imports(code)
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in imports
    missing = {module: provider_of(module) for module in imports if provider_of(module) not in installed_with_otel()}
    assert not missing, f"imported, but not installed by the otel extra: {missing}"
    assert "instrument(app)" in code and "worker_process_init.connect(setup_tracing" in code


def test_the_readme_names_every_span_and_attribute_the_adapter_sets() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Tracing with OpenTelemetry\n", 1)[1].split("\n## ", 1)[0]
    package = REPO / "namel3ss_celery"
    code = "\n".join(path.read_text() for path in package.rglob("*.py"))
    spans = set(re.findall(r'span\("(n3\.[a-z]+)"', code)) | {f"n3.{name}" for name in ("cancel", "deadline")}
    assert spans >= {"n3.dispatch", "n3.launch", "n3.step", "n3.settle"}
    for name in spans:
        assert f"`{name}`" in section, name
    for attribute in ("run_id", "workflow", "node", "block", "strategy", "step", "target", "outcome"):
        assert f"`namel3ss.{attribute}`" in section, attribute
