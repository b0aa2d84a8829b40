"""Pydantic models of the Namel3ss IR: parallel blocks and their steps.

Field names and defaults are the IR's, with one deliberate change
(``fallback_to_local`` is ``False``, see ``infra.py``). Fields added here are
marked *extension*.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import SpecError
from .enums import ParallelStrategy
from .limits import MAX_DURATION_SECONDS, MAX_NESTING, is_container, nested_too_deep

FIELD_ERROR = "n3_field"
"""The type of a model-level error about one of its keys: ``load.spec_error`` adds ``ctx["field"]`` to its path."""

NESTED_SPEC_FIELDS = frozenset(
    {
        "steps",
        "fan_out",
        "parallel_blocks",
        "worker_pools",
        "task_queues",
        "distributed_configs",
        "event_triggers",
        "event_handlers",
        "workflows",
    }
)
"""Fields that hold specs: each checks its own values' nesting, so an error names the deepest spec."""


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error a model validator raises about its key ``field`` (the path names that key)."""
    return PydanticCustomError(FIELD_ERROR, "{message}", {"field": field, "message": message})


def check_nesting(data: Any, skip: Collection[str] = ()) -> Any:
    """``data`` as given, once no value of it (but those under ``skip``) nests more than ``MAX_NESTING`` deep."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if is_container(value) and key not in skip and nested_too_deep(value):
                raise field_error(str(key), f"nested more than {MAX_NESTING} levels deep (the limit, MAX_NESTING)")
    return data


def bounded_payload(cls: type, data: Any) -> Any:
    """A step's (or node's) keys, its payload among them, nest at most ``MAX_NESTING`` deep."""
    return check_nesting(data)


def _within_limit(seconds: float) -> float:
    if not seconds <= MAX_DURATION_SECONDS:
        raise ValueError(
            f"{seconds:g} seconds is too long: at most {MAX_DURATION_SECONDS:.0f} (30 days, MAX_DURATION_SECONDS)"
        )
    return seconds


Seconds = Annotated[float, AfterValidator(_within_limit)]
"""A duration in seconds, at most ``MAX_DURATION_SECONDS``: it becomes a deadline or an expiry time."""


def check_node_name(name: str) -> str:
    """A block or workflow node name: no ``:``, which separates the field names of a run's record."""
    if ":" in name:
        raise ValueError(
            f"{name!r} contains ':', which a block or node name cannot (it separates the fields of a run's record)"
        )
    return name


class Spec(BaseModel):
    """Base of every spec: frozen, unknown keys are errors, and no value nests more than ``MAX_NESTING`` deep."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    @model_validator(mode="before")
    @classmethod
    def _bounded_nesting(cls, data: Any) -> Any:
        return check_nesting(data, skip=NESTED_SPEC_FIELDS)


def target_from_type(cls: type, data: Any) -> Any:
    """The Namel3ss runtime names a step's target ``type``: accept it as ``target``."""
    if isinstance(data, dict) and data.get("target") is None and isinstance(data.get("type"), str):
        return {**data, "target": data["type"]}
    return data


class StepSpec(BaseModel):
    """One step of a block; extra keys are its payload and are kept as given.

    ``target`` names what runs it: a registered step name or ``module:function``.
    The Namel3ss runtime also spells it ``type``; both are accepted.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str | None = None
    target: str | None = None
    kind: str = "tool"
    timeout_seconds: Seconds | None = Field(default=None, gt=0)  # extension
    worker_pool: str | None = None  # extension
    priority: int | None = Field(default=None, ge=0, le=9)  # extension: 0 lowest .. 9 highest, on both brokers

    _target_from_type = model_validator(mode="before")(target_from_type)
    _bounded_nesting = model_validator(mode="before")(bounded_payload)

    def payload(self) -> dict[str, Any]:
        """The step as the step function receives it: every key it was given."""
        data = self.model_dump()
        for name in OPTIONAL_STEP_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data


OPTIONAL_STEP_FIELDS = ("name", "target", "timeout_seconds", "worker_pool", "priority")


class FanOutSpec(Spec):
    """The Namel3ss ``FanOut``: one step per item of a context list (extension of ``ParallelBlockSpec``).

    ``split_by`` names a context key, dotted for nested ones (``outputs.fetch``).
    Each item reaches its step as ``step["item"]``; with ``batch_size``, each
    batch as ``step["items"]``.
    """

    target: str = Field(min_length=1)
    split_by: str = Field(min_length=1)
    batch_size: int | None = Field(default=None, ge=1)


class ParallelBlockSpec(Spec):
    """A block of steps run in parallel under one strategy (IR ``ParallelBlockSpec``)."""

    name: str = Field(min_length=1)
    steps: list[StepSpec] = Field(default_factory=list)
    strategy: ParallelStrategy = ParallelStrategy.ALL
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout_seconds: Seconds | None = Field(default=None, gt=0)
    fail_fast: bool = True
    retry_failed: bool = False
    max_retries: int = Field(default=3, ge=0)
    reduce_function: str | None = None
    output_key: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    required_permission_level: str | None = None
    allowed_capabilities: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    terminate_losers: bool = False  # extension
    fan_out: FanOutSpec | None = None  # extension

    _name_without_colon = field_validator("name")(check_node_name)

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[StepSpec]) -> list[StepSpec]:
        seen: set[str] = set()
        for index, step in enumerate(steps):
            key = step_key(step, index)
            if key in seen:
                raise ValueError(f"two steps are named {key!r}; step names must be unique in a block")
            seen.add(key)
        return steps

    @model_validator(mode="after")
    def _fan_out_fits(self) -> ParallelBlockSpec:
        if self.fan_out is not None:
            if self.strategy not in (ParallelStrategy.MAP_REDUCE, ParallelStrategy.COLLECT):
                raise ValueError("fan_out works with strategy 'map_reduce' or 'collect'")
            if self.steps:
                raise ValueError("a block with fan_out makes its own steps; leave 'steps' empty")
        return self

    @model_validator(mode="after")
    def _reducer_needs_map_reduce(self) -> ParallelBlockSpec:
        if self.strategy == ParallelStrategy.MAP_REDUCE and not self.reduce_function:
            raise ValueError(
                "strategy 'map_reduce' needs reduce_function (sum, count, concat, merge or a registered reducer)"
            )
        return self


def step_key(step: StepSpec, index: int) -> str:
    """The name a step's result is filed under: its ``name``, or ``step_<index>``."""
    return step.name if step.name else f"step_{index}"


def expand_fan_out(block: ParallelBlockSpec, context: dict[str, Any]) -> ParallelBlockSpec:
    """The block with one step per item (or batch) of its fan-out list (and no ``fan_out`` left); the block
    itself without one.

    Raises:
        SpecError: ``split_by`` names no context key, or not a list (path ``fan_out.split_by``).
    """
    fan = block.fan_out
    if fan is None:
        return block
    value: Any = context
    for part in fan.split_by.split("."):
        if not isinstance(value, dict) or part not in value:
            raise SpecError(f"context has no key {fan.split_by!r} to fan out over", path="fan_out.split_by")
        value = value[part]
    if not isinstance(value, list):
        raise SpecError(f"context[{fan.split_by!r}] is {type(value).__name__}, not a list", path="fan_out.split_by")
    try:
        if fan.batch_size is None:
            steps = [StepSpec.model_validate({"target": fan.target, "item": item}) for item in value]
        else:
            size = fan.batch_size
            steps = [
                StepSpec.model_validate({"target": fan.target, "items": value[i : i + size]})
                for i in range(0, len(value), size)
            ]
    except ValidationError as exc:  # an item nested too deep, say
        problem = exc.errors(include_url=False)[0]
        raise SpecError(
            f"an item of context[{fan.split_by!r}] cannot be a step: {problem['msg']}", path="fan_out.split_by"
        ) from exc
    return block.model_copy(update={"steps": steps, "fan_out": None})
