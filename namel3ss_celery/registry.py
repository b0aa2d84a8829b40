"""Registries of step functions and reducers, shared by every Namel3ssCelery in the process.

``@step("name")`` and ``@reducer("name")`` at module level register here, like
Celery's ``shared_task``; ``Namel3ssCelery`` instances keep their own registry
on top and listen for new module-level entries.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from celery.utils.imports import cwd_in_path

from .errors import CompileError, ConfigurationError, UnknownTarget

StepFunction = Callable[[dict[str, Any], dict[str, Any]], Any]
ReducerFunction = Callable[[list[Any]], Any]

STEP_TASK_PREFIX = "n3.step."


@dataclass(frozen=True)
class StepDef:
    """A step function under its target name."""

    target: str
    function: StepFunction

    @property
    def task_name(self) -> str:
        return STEP_TASK_PREFIX + self.target

    @property
    def is_async(self) -> bool:
        return asyncio.iscoroutinefunction(self.function)


class Registry:
    """Targets and reducers by name; ``listeners`` hear of each new step."""

    def __init__(self, parent: Registry | None = None) -> None:
        self.parent = parent
        self._steps: dict[str, StepDef] = {}
        self._reducers: dict[str, ReducerFunction] = {}
        self.listeners: list[Callable[[StepDef], None]] = []

    def add_step(self, target: str, function: StepFunction) -> StepDef:
        check_target_name(target)
        if not callable(function):
            raise CompileError(f"step {target!r} must be a function, not {type(function).__name__}")
        existing = self._steps.get(target)
        if (
            existing is not None
            and existing.function is not function
            and _qualname(existing.function) != _qualname(function)
        ):
            raise CompileError(f"step {target!r} is already registered to {_qualname(existing.function)}")
        definition = StepDef(target, function)
        self._steps[target] = definition
        for listener in list(self.listeners):
            listener(definition)
        return definition

    def add_reducer(self, name: str, function: ReducerFunction) -> None:
        if name in BUILTIN_REDUCERS:
            raise CompileError(f"reducer {name!r} is built in and cannot be replaced")
        self._reducers[name] = function

    def registering_step(self, target: str) -> Callable[[StepFunction], StepFunction]:
        """A decorator that registers a step function under ``target`` and returns it unchanged."""

        def decorate(function: StepFunction) -> StepFunction:
            self.add_step(target, function)
            return function

        return decorate

    def registering_reducer(self, name: str) -> Callable[[ReducerFunction], ReducerFunction]:
        """A decorator that registers a reducer under ``name`` and returns it unchanged."""

        def decorate(function: ReducerFunction) -> ReducerFunction:
            self.add_reducer(name, function)
            return function

        return decorate

    def step(self, target: str) -> StepDef | None:
        found = self._steps.get(target)
        if found is None and self.parent is not None:
            return self.parent.step(target)
        return found

    def reducer(self, name: str) -> ReducerFunction | None:
        found = self._reducers.get(name)
        if found is None and self.parent is not None:
            return self.parent.reducer(name)
        return found

    def steps(self) -> Iterator[StepDef]:
        seen = set(self._steps)
        yield from self._steps.values()
        if self.parent is not None:
            yield from (d for d in self.parent.steps() if d.target not in seen)


def _qualname(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)!s}"


def check_target_name(target: str) -> None:
    """A target is a dotted name, or ``module:function``; no spaces, nothing else."""
    if (
        not isinstance(target, str)
        or not target
        or any(c.isspace() for c in target)
        or target.count(":") > 1
        or any(not part for part in target.split(":"))
    ):
        raise UnknownTarget(f"{target!r} is not a valid target name (a name, or module:function)")


SHARED = Registry()


def step(target: str) -> Callable[[StepFunction], StepFunction]:
    """Register a module-level step function (sync or ``async def``) under ``target``.

    Every ``Namel3ssCelery`` in the process sees it, and it runs as the Celery
    task ``n3.step.<target>``.

    Args:
        target: the name steps use in their ``target`` key.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """
    return SHARED.registering_step(target)


def reducer(name: str) -> Callable[[ReducerFunction], ReducerFunction]:
    """Register a module-level map_reduce reducer ``(results: list) -> value``."""
    return SHARED.registering_reducer(name)


def import_step_modules(modules: Sequence[str], registry: Registry) -> None:
    """Import the listed step modules and register their module-level functions as ``module:function``.

    They are looked for in the current directory too, as Celery looks there for the app of ``celery -A``.

    Raises:
        ConfigurationError: a listed module cannot be imported.
    """
    for module_name in modules:
        try:
            with cwd_in_path():  # the current directory is importable, as for `celery -A`'s app
                module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is a configuration error
            raise ConfigurationError(
                f"NAMEL3SS_CELERY_STEP_MODULES lists {module_name!r}, which cannot be imported: {exc}",
                setting="NAMEL3SS_CELERY_STEP_MODULES",
            ) from exc
        for attr, value in vars(module).items():
            if attr.startswith("_") or not inspect.isfunction(value) or value.__module__ != module.__name__:
                continue
            if registry.step(f"{module_name}:{attr}") is None:
                registry.add_step(f"{module_name}:{attr}", value)


# --- built-in reducers -------------------------------------------------------


def _sum(results: list[Any]) -> Any:
    return sum(results, 0)


def _count(results: list[Any]) -> int:
    return len(results)


def _concat(results: list[Any]) -> Any:
    if not results:
        return []
    if all(isinstance(r, str) for r in results):
        return "".join(results)
    if all(isinstance(r, list) for r in results):
        return [item for r in results for item in r]
    kinds = sorted({type(r).__name__ for r in results})
    raise TypeError(f"concat needs all lists or all strings, got {', '.join(kinds)}")


def _merge(results: list[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for r in results:
        if not isinstance(r, dict):
            raise TypeError(f"merge needs dicts, got {type(r).__name__}")
        merged.update(r)
    return merged


BUILTIN_REDUCERS: dict[str, ReducerFunction] = {"sum": _sum, "count": _count, "concat": _concat, "merge": _merge}


# --- stable Celery task names of the adapter's own tasks -----------------------

LAUNCH_TASK = "n3.run.launch"
SETTLE_CHORD_TASK = "n3.settle.chord"
SETTLE_CHORD_FAILED_TASK = "n3.settle.chord_failed"
SETTLE_DEADLINE_TASK = "n3.settle.deadline"
EVENT_HANDLE_TASK = "n3.events.handle"  # one program event handler, on one event
