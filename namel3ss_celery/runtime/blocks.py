"""A Namel3ss parallel block (a dict, or a spec object) as this package's ``ParallelBlockSpec``, and the block's
result in the shape the Namel3ss runtime gives it; shared by the local and the distributed executor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..plan.fields import STEP_VALUE
from ..results import ParallelExecutionResult, RunStatus, TaskStatus
from ..spec import ParallelBlockSpec, ParallelStrategy, StepSpec, load_model

logger = logging.getLogger("namel3ss_celery")

STEP_KEYS = ("name", "timeout_seconds", "worker_pool")  # a dict step's keys that its placeholder keeps
BLOCK_FIELDS = tuple(name for name in ParallelBlockSpec.model_fields if name != "steps")
MAP_REDUCE = str(ParallelStrategy.MAP_REDUCE)
UPPER_CASE = {s.name: str(s) for s in ParallelStrategy}  # Namel3ss takes "ALL" for "all", and so on


def block_spec(parallel_block: Any, max_concurrency: int | None, timeout: float | None) -> ParallelBlockSpec:
    """A ``ParallelBlockSpec`` from the Namel3ss dict (or spec object), with the executor's defaults."""
    given = {"max_concurrency": max_concurrency, "timeout_seconds": timeout}
    if isinstance(parallel_block, Mapping):  # the defaults join the dict: validated once, as if written there
        missing = {k: v for k, v in given.items() if v is not None and parallel_block.get(k) is None}
        return load_model(ParallelBlockSpec, {**parallel_block, **missing})
    block = load_model(ParallelBlockSpec, parallel_block)
    defaults = {k: v for k, v in given.items() if v is not None and getattr(block, k) is None}
    if not defaults:
        return block
    # Validated again, as a spec with these values would be (a default of 1e308 seconds is refused too).
    return load_model(ParallelBlockSpec, {**block.model_dump(exclude_unset=True), **defaults})


def raw_block(
    parallel_block: Any, inline: bool = False, target: str | None = None, shared: StepSpec | None = None
) -> tuple[Any, list[Any]]:
    """The block with each step replaced by a placeholder, and the steps' values exactly as given: the
    Namel3ss runtime hands its step executor every step as it is (``"step1"``, ``3``, an object of the
    caller's, a dict with a ``type`` or ``target`` key of its own), and so does this one.

    A placeholder carries the value's index in the returned list (in this process), or, ``inline``, the
    value itself (for workers: JSON values only, refused at dispatch otherwise, naming the step). It keeps a
    dict step's ``name``, ``timeout_seconds`` and ``worker_pool`` (and an object step's string ``name``,
    which Namel3ss files its result under). With ``target``, each placeholder names it. A strategy written
    as Namel3ss also takes it, in capitals (``"MAP_REDUCE"``), is its value. A ``ParallelBlockSpec`` of this
    package keeps the steps that name a target of their own; each other step goes to the step executor as
    the step function would receive it (its keys). With ``shared``, a placeholder that keeps no key of its
    step is that one ``StepSpec`` (validated once, not once per step): for a block run inline, which finds a
    step's value by its place in the block.
    """
    base: dict[str, Any]
    if isinstance(parallel_block, ParallelBlockSpec):
        if all(step.target for step in parallel_block.steps):
            return parallel_block, []
        base, raw_steps = parallel_block.model_dump(exclude={"steps"}), list(parallel_block.steps)
    elif isinstance(parallel_block, Mapping):
        base, raw_steps = dict(parallel_block), list(parallel_block.get("steps") or [])
    elif hasattr(parallel_block, "steps"):
        base, raw_steps = spec_dict(parallel_block), list(parallel_block.steps)
    else:
        return parallel_block, []
    strategy = base.get("strategy")
    if isinstance(strategy, str) and strategy in UPPER_CASE:
        base["strategy"] = UPPER_CASE[strategy]
    values: list[Any] = []
    steps: list[dict[str, Any] | StepSpec] = []
    for given in raw_steps:
        raw: Any = given
        if isinstance(given, StepSpec):
            if given.target:  # a step of this package's spec that names its target runs it
                steps.append(given.model_dump())
                continue
            raw = given.payload()
        kept: dict[str, Any] = {}
        if isinstance(raw, Mapping):
            kept = {k: raw[k] for k in STEP_KEYS if k in raw}
        elif isinstance(getattr(raw, "name", None), str):
            kept = {"name": raw.name}
        if shared is not None and not kept:
            steps.append(shared)
        else:
            placeholder: dict[str, Any] = {STEP_VALUE: raw if inline else len(values), **kept}
            if target is not None:
                placeholder["target"] = target
            steps.append(placeholder)
        values.append(raw)
    return {**base, "steps": steps}, values


def block_data(parallel_block: Any) -> Any:
    """A block as data this package loads: a mapping or a ``ParallelBlockSpec`` as it is, a spec object's
    fields (``spec_dict``) with its steps."""
    if isinstance(parallel_block, (Mapping, ParallelBlockSpec)) or not hasattr(parallel_block, "steps"):
        return parallel_block
    return {**spec_dict(parallel_block), "steps": list(parallel_block.steps)}


def spec_dict(block: Any) -> dict[str, Any]:
    """Every field of a spec object (the Namel3ss IR's ``ParallelBlockSpec`` dataclass, say) that this package's
    ``ParallelBlockSpec`` has, but its steps: ``retry_failed``, ``max_retries``, ``output_key``, ``depends_on``,
    ``metadata``, ... (a field left ``None`` takes the default)."""
    found: dict[str, Any] = {}
    for name in BLOCK_FIELDS:
        value = getattr(block, name, None)
        if value is not None:
            found[name] = value.value if name == "strategy" and hasattr(value, "value") else value
    return found


def targeted(block: ParallelBlockSpec, target: str) -> ParallelBlockSpec:
    """Every step without a target of its own runs ``target`` (the Namel3ss step executor)."""
    if all(s.target for s in block.steps):  # placeholders name it already (raw_block)
        return block
    steps = [s if s.target else s.model_copy(update={"target": target}) for s in block.steps]
    return block.model_copy(update={"steps": steps})


@dataclass(frozen=True)
class Unreduced:
    """A map_reduce block the Namel3ss runtime runs without reducing: no ``reduce_function`` (its result is
    the ``all`` result), or one it does not know (``reducer``: the results come back as a list)."""

    reducer: str | None


def unreduced(block: Any, known: Callable[[str], bool]) -> tuple[Any, Unreduced | None]:
    """``block`` run as ``all`` when it is a map_reduce block without a reducer or with one ``known`` does not
    know (what to do with its result then), as the Namel3ss runtime does; any other block as it is.

    A program's blocks are checked when the program is loaded, and refused in both cases; the runtime API
    takes what Namel3ss's runtime takes.
    """
    if isinstance(block, ParallelBlockSpec):
        strategy, reducer = str(block.strategy), block.reduce_function
    elif isinstance(block, Mapping):
        value, reducer = block.get("strategy"), block.get("reduce_function")
        strategy = str(getattr(value, "value", value))
    else:
        return block, None
    if strategy != MAP_REDUCE or (reducer and known(reducer)):
        return block, None
    if reducer:
        logger.warning("unknown reduce function %r: the map_reduce results are given unreduced", reducer)
    if isinstance(block, ParallelBlockSpec):
        return block.model_copy(update={"strategy": ParallelStrategy.ALL}), Unreduced(reducer)
    return {**block, "strategy": str(ParallelStrategy.ALL)}, Unreduced(reducer or None)


def namel3ss_shaped(result: ParallelExecutionResult, unreduced: Unreduced | None) -> ParallelExecutionResult:
    """``result`` as the Namel3ss runtime shapes it: a map_reduce block run as ``all`` (``unreduced``) is
    reported as map_reduce again, with an unknown reducer's results as a list; ``aggregated_output`` is
    ``final_result`` for all and collect, ``{"reduced_result": final_result}`` for a reduced map_reduce, and
    ``None`` for race and any_success."""
    if unreduced is not None:
        result.strategy = MAP_REDUCE
        if unreduced.reducer and result.overall_status == RunStatus.COMPLETED:
            found = [r.result for r in result.results if r.status == TaskStatus.COMPLETED and r.result is not None]
            result.final_result = found or None
    strategy = result.strategy
    if strategy == MAP_REDUCE and (unreduced is None or unreduced.reducer):
        completed = result.overall_status == RunStatus.COMPLETED
        result.aggregated_output = {"reduced_result": result.final_result} if completed else None
    elif strategy in (str(ParallelStrategy.ALL), str(ParallelStrategy.COLLECT), MAP_REDUCE):
        result.aggregated_output = result.final_result
    else:
        result.aggregated_output = None
    return result
