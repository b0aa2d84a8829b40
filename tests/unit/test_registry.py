"""Step and reducer registries, the built-in reducers, target names, step modules."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery.errors import CompileError, ConfigurationError, UnknownTarget
from namel3ss_celery.registry import (
    BUILTIN_REDUCERS,
    SHARED,
    Registry,
    StepDef,
    check_target_name,
    import_step_modules,
    reducer,
    step,
)


def sync_step(step: dict[str, Any], context: dict[str, Any]) -> str:
    return "sync"


async def async_step(step: dict[str, Any], context: dict[str, Any]) -> str:
    return "async"


def other_step(step: dict[str, Any], context: dict[str, Any]) -> str:
    return "other"


@pytest.mark.parametrize(
    ("name", "results", "expected"),
    [
        ("sum", [], 0),
        ("sum", [1, 2, 3], 6),
        ("sum", [1.5, 2], 3.5),
        ("count", [], 0),
        ("count", [1, "a", None, {}], 4),
        ("concat", [], []),
        ("concat", ["ab", "", "c"], "abc"),
        ("concat", [[1], [], [2, 3]], [1, 2, 3]),
        ("concat", [[{"a": 1}], [[2]]], [{"a": 1}, [2]]),
        ("merge", [], {}),
        ("merge", [{"a": 1}, {"a": 2, "b": 3}], {"a": 2, "b": 3}),
    ],
)
def test_builtin_reducers(name: str, results: list[Any], expected: Any) -> None:
    assert BUILTIN_REDUCERS[name](results) == expected


@pytest.mark.parametrize(
    ("name", "results", "message"),
    [
        ("concat", [[1], "a"], "concat needs all lists or all strings, got list, str"),
        ("concat", [1, 2], "concat needs all lists or all strings, got int"),
        ("concat", ["a", {"b": 1}], "got dict, str"),
        ("merge", [{"a": 1}, [("b", 2)]], "merge needs dicts, got list"),
        ("merge", [1], "merge needs dicts, got int"),
        ("sum", [1, "a"], "unsupported operand"),
    ],
)
def test_builtin_reducers_refuse_mixed_types(name: str, results: list[Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        BUILTIN_REDUCERS[name](results)


@pytest.mark.parametrize("name", sorted(BUILTIN_REDUCERS))
def test_a_builtin_reducer_cannot_be_replaced(name: str) -> None:
    with pytest.raises(CompileError, match=f"reducer '{name}' is built in"):
        Registry().add_reducer(name, lambda results: None)


def test_a_registered_reducer_is_found_through_the_parent() -> None:
    parent = Registry()
    parent.add_reducer("top", max)
    child = Registry(parent=parent)
    assert child.reducer("top") is max
    assert child.reducer("missing") is None


@pytest.mark.parametrize("target", ["fetch", "fetch_sources", "a.b.c", "mod:func", "pkg.mod:func", "x-y"])
def test_valid_target_names(target: str) -> None:
    check_target_name(target)


@pytest.mark.parametrize("target", ["", " ", "two words", "tab\there", "new\nline", "a:b:c", None, 3])
def test_invalid_target_names(target: Any) -> None:
    with pytest.raises(UnknownTarget, match="is not a valid target name"):
        check_target_name(target)


def test_add_step_refuses_an_invalid_name_or_a_non_function() -> None:
    registry = Registry()
    with pytest.raises(UnknownTarget):
        registry.add_step("bad name", sync_step)
    with pytest.raises(CompileError, match="must be a function, not str"):
        registry.add_step("t", "not callable")  # type: ignore[arg-type]


def test_a_target_cannot_be_taken_by_another_function() -> None:
    registry = Registry()
    registry.add_step("t", sync_step)
    registry.add_step("t", sync_step)  # the same function again is fine
    with pytest.raises(CompileError, match=r"step 't' is already registered to .*sync_step"):
        registry.add_step("t", other_step)
    assert registry.step("t").function is sync_step  # type: ignore[union-attr]


def test_step_definitions() -> None:
    registry = Registry()
    sync_def = registry.add_step("s", sync_step)
    async_def = registry.add_step("pkg.mod:a", async_step)
    assert sync_def == StepDef("s", sync_step)
    assert (sync_def.task_name, sync_def.is_async) == ("n3.step.s", False)
    assert (async_def.task_name, async_def.is_async) == ("n3.step.pkg.mod:a", True)


def test_a_child_registry_sees_its_parent_and_shadows_it() -> None:
    parent = Registry()
    parent.add_step("a", sync_step)
    parent.add_step("b", sync_step)
    child = Registry(parent=parent)
    child.add_step("b", other_step)
    assert child.step("a").function is sync_step  # type: ignore[union-attr]
    assert child.step("b").function is other_step  # type: ignore[union-attr]
    assert child.step("c") is None
    assert [(d.target, d.function) for d in child.steps()] == [("b", other_step), ("a", sync_step)]


def test_listeners_hear_each_new_step() -> None:
    registry = Registry()
    heard: list[str] = []
    registry.listeners.append(lambda definition: heard.append(definition.task_name))
    registry.add_step("one", sync_step)
    registry.add_step("two", async_step)
    assert heard == ["n3.step.one", "n3.step.two"]


def test_module_level_decorators_register_in_the_shared_registry() -> None:
    def unit_step(step: dict[str, Any], context: dict[str, Any]) -> int:
        return 1

    def unit_reducer(results: list[Any]) -> int:
        return len(results)

    assert step("tests.unit.registry_step")(unit_step) is unit_step
    assert reducer("tests.unit.registry_reducer")(unit_reducer) is unit_reducer
    assert SHARED.step("tests.unit.registry_step").function is unit_step  # type: ignore[union-attr]
    assert SHARED.reducer("tests.unit.registry_reducer") is unit_reducer
    assert Registry(parent=SHARED).step("tests.unit.registry_step") is not None


def test_import_step_modules_registers_module_functions() -> None:
    import examples.steps

    registry = Registry()
    import_step_modules(["examples.steps"], registry)
    shout = registry.step("examples.steps:shout")
    assert shout is not None
    assert shout.function is examples.steps.shout
    assert shout.task_name == "n3.step.examples.steps:shout"
    assert shout.function({"text": "hi"}, {}) == "HI"
    targets = {d.target for d in registry.steps()}
    assert "examples.steps:fetch_sources" in targets
    # imported names and non-functions are not steps
    assert "examples.steps:step" not in targets
    assert "examples.steps:reducer" not in targets
    assert "examples.steps:CORPUS" not in targets
    # importing twice is harmless
    import_step_modules(["examples.steps"], registry)


def test_an_unimportable_step_module_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="NAMEL3SS_CELERY_STEP_MODULES lists 'no_such_module_n3'") as info:
        import_step_modules(["no_such_module_n3"], Registry())
    assert info.value.setting == "NAMEL3SS_CELERY_STEP_MODULES"
    assert isinstance(info.value.__cause__, ImportError)
