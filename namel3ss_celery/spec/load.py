"""Loading specs from dicts, JSON or YAML files and Namel3ss dataclasses, with clear errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from .bounded_yaml import YAMLTooLarge, safe_load
from .limits import MAX_NESTING, MAX_PROGRAM_BYTES
from .models import FIELD_ERROR, ParallelBlockSpec
from .program import ProgramSpec, WorkflowSpec

M = TypeVar("M", bound=BaseModel)

PROGRAM_KEYS = frozenset(ProgramSpec.model_fields) - {"name", "metadata"}

Source = BaseModel | Mapping[str, Any] | str | Path


def load_program(source: Source) -> ProgramSpec:
    """Load a program from a YAML/JSON file path, a mapping or a Namel3ss object.

    Raises:
        SpecError: the file cannot be read or parsed, or is over a bound of ``spec.limits``
            (``MAX_PROGRAM_BYTES``; for YAML ``MAX_YAML_DEPTH`` and ``MAX_YAML_NODES``, aliases expanded):
            ``.path`` is the file; or a field is invalid (``.path`` names it, e.g.
            ``parallel_blocks[0].strategy``).
    """
    return load_model(ProgramSpec, source)


def load_model(model: type[M], source: Source) -> M:
    """Validate ``source`` as ``model``; every problem becomes a ``SpecError`` naming its field path."""
    if isinstance(source, model):
        return source
    return _validate(model, to_data(source))


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, model.__name__) from exc


def load_any(source: Source) -> ParallelBlockSpec | WorkflowSpec | ProgramSpec:
    """A block, workflow or program, whichever ``source`` is.

    A mapping with any program key (``parallel_blocks``, ``workflows``, ...) is a
    program; one whose steps reference blocks or dependencies, or with a
    ``description``, is a workflow; any other mapping is a block. A path is always
    a program file.

    Raises:
        SpecError: as ``load_program``; also a mapping of only ``name`` and empty ``steps``: neither a
            workflow (it needs a node) nor, without a field of a block's own (``strategy``), a block.
    """
    if isinstance(source, (ParallelBlockSpec, WorkflowSpec, ProgramSpec)):
        return source
    if isinstance(source, (str, Path)):
        return load_program(source)
    data = to_data(source)  # converted once, then validated as the model it is
    if PROGRAM_KEYS & set(data):
        return _validate(ProgramSpec, data)
    steps = data.get("steps")
    if "description" in data or (
        isinstance(steps, list) and any(isinstance(s, Mapping) and ("block" in s or "depends_on" in s) for s in steps)
    ):
        return _validate(WorkflowSpec, data)
    block = _validate(ParallelBlockSpec, data)
    if not block.steps and block.fan_out is None and set(data) <= {"name", "steps"}:
        # An empty workflow or an empty block? A block says so with a field of its own (its strategy): an
        # empty map_reduce gives its reducer's empty value.
        raise SpecError(
            "no steps: a workflow needs at least one node; an empty block names its strategy",
            path="steps",
        )
    return block


def to_data(source: Source) -> dict[str, Any]:
    """Plain data from a path, a mapping, a pydantic model or a (Namel3ss) dataclass."""
    if isinstance(source, BaseModel):
        return source.model_dump()
    if isinstance(source, (str, Path)):
        return _read_file(Path(source))
    if (dataclasses.is_dataclass(source) and not isinstance(source, type)) or isinstance(source, Mapping):
        data: dict[str, Any] = _plain(source, 0)
        return data
    raise SpecError(f"cannot load a spec from {type(source).__name__}; give a mapping, a file path or a spec object")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PROGRAM_BYTES + 1)  # a bound, even for a pipe or a device
    except OSError as exc:
        raise SpecError(f"cannot read program file: {exc.strerror or exc}", path=str(path)) from exc
    if len(raw) > MAX_PROGRAM_BYTES:
        raise SpecError(
            f"a program file holds at most {MAX_PROGRAM_BYTES} bytes (MAX_PROGRAM_BYTES); this one holds more",
            path=str(path),
        )
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if kind == "JSON" else safe_load(text)
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text: {exc}", path=str(path)) from exc
    except YAMLTooLarge as exc:
        raise SpecError(f"refused: {exc}", path=str(path)) from exc
    except RecursionError as exc:  # the JSON decoder's own bound on nesting, hit long before the stack
        raise SpecError(f"not valid JSON: nested too deep (at most {MAX_NESTING} levels)", path=str(path)) from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"not valid {kind}: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise SpecError(f"a program file holds a mapping at the top, not {type(data).__name__}", path=str(path))
    return data


_SCALARS = frozenset({str, int, float, bool, type(None)})  # exact types: an enum member is none of them


_PLAIN_DEPTH = MAX_NESTING + 20  # deeper than any valid spec: validation refuses what is left below it


def _plain(value: Any, depth: int) -> Any:
    """Dataclasses (as Namel3ss specs are) become dicts and enum members their values, down to ``_PLAIN_DEPTH``."""
    if type(value) in _SCALARS or depth > _PLAIN_DEPTH:  # scalars: most of a large spec, and the cheapest test
        return value
    if isinstance(value, BaseModel):  # a spec model already (a step given as one): validated as it is
        return value
    if isinstance(value, (dict, Mapping)):  # dict first: the common case, and no ABC check
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    enum_value = getattr(value, "value", None)
    if enum_value is not None and type(value).__module__ != "builtins" and hasattr(type(value), "__members__"):
        return enum_value
    return value


def spec_error(exc: ValidationError, model_name: str) -> SpecError:
    """Turn pydantic's errors into one SpecError whose message lists each field path."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if error["type"] == FIELD_ERROR:  # a model's error about one of its keys
            loc = (*loc, str(error.get("ctx", {}).get("field", "")))
        path = format_path(loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required field is missing"
        problems.append((path, message.removeprefix("Value error, ")))
    lines = "; ".join(f"{p or model_name}: {m}" for p, m in problems)
    first = problems[0][0] if problems else ""
    err = SpecError(f"invalid {model_name}: {lines}", problems=problems)
    err.path = first
    return err


def format_path(loc: tuple[int | str, ...]) -> str:
    """``("parallel_blocks", 0, "strategy")`` -> ``parallel_blocks[0].strategy``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
