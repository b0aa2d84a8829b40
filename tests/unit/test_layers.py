"""Imports run one way, down the layers of STYLE.md; no cycles; no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "namel3ss_celery"

# The layer of each module or folder (a module imports from its own layer or below).
LAYERS = {
    "errors": 1,
    "spec": 2,
    "registry": 2,
    "settings": 2,
    "plan": 2,
    "results": 2,
    "gc_pause": 2,
    "fork_pause": 2,
    "tracing": 2,
    "engine": 3,
    "routing": 3,
    "events": 4,
    "worker": 4,
    "compiler": 4,
    "deploy": 4,
    "apps": 5,
    "extension": 5,
    "runs": 5,
    "local": 5,
    "eager": 5,
    "publishing": 5,
    "cli": 6,
    "runtime": 6,
    "testing": 6,
    "celery": 6,
    "integrations": 6,
    "__init__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["__init__"]
    return LAYERS[parts[1]]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import of the package's own modules, TYPE_CHECKING ones included."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # a module's relative imports start from its package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] == "namel3ss_celery":
                names = [a.name for a in node.names]
                submodules = [
                    f"{target}.{n}"
                    for n in names
                    if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).with_suffix(".py").exists()
                    or (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).is_dir()
                ]
                found.append((target, names))
                found.extend((s, []) for s in submodules)
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.split(".")[0] == "namel3ss_celery")
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module: str) -> None:
    upward = [
        f"{target} (layer {layer(target)})"
        for target, _names in imports(MODULES[module])
        if target != "namel3ss_celery" and layer(target) > layer(module)
    ]
    assert not upward, f"{module} (layer {layer(module)}) imports upward: {', '.join(upward)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("namel3ss_celery.worker")))
def test_worker_code_never_imports_the_compiler(module: str) -> None:
    compiler = [t for t, _ in imports(MODULES[module]) if t.startswith("namel3ss_celery.compiler")]
    assert not compiler, f"{module} imports {compiler}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module: str) -> None:
    private = [f"{t}.{n}" for t, names in imports(MODULES[module]) for n in names if n.startswith("_")]
    assert not private, f"{module} imports private names: {private}"


def test_there_is_no_import_cycle() -> None:
    graph = {m: {t for t, _ in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    graph = {
        m: {t for t in targets if not m.startswith(t + ".") and t != "namel3ss_celery"} for m, targets in graph.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
