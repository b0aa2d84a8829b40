"""A run's plan: the nodes of a block, workflow or program, and where each pool's steps go.

Plain data: what ``dispatch`` stores in the run's record (``Plan.to_json``) and
every worker reads back (``Plan.from_json``). ``compiler.planning.make_plan``
makes one from a spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from ..results import ParallelExecutionResult
from ..spec import ParallelBlockSpec


@dataclass(frozen=True)
class PlanNode:
    """One node: a block, or a single step wrapped as a one-step block (``single``)."""

    name: str
    block: ParallelBlockSpec
    depends_on: tuple[str, ...] = ()
    single: bool = False

    def output(self, result: ParallelExecutionResult) -> Any:
        """What later nodes see as ``context["outputs"][name]``."""
        if self.single:
            return result.results[0].result if result.results else None
        return result.final_result


@dataclass(frozen=True)
class PoolRoute:
    """Where a pool's steps go and how: its queue (a region's queue under locality_aware), the targets it
    allows (empty: any), its task queue's delivery contract and its distributed config."""

    queue: str
    allowed_tools: tuple[str, ...] = ()
    allowed_agents: tuple[str, ...] = ()
    arguments: dict[str, Any] = field(default_factory=dict, compare=False)  # the queue's declaration arguments
    countdowns: tuple[float, ...] | None = None  # retry delays of its task queue; None: the block's own retries
    at_least_once: bool = False
    max_message_size: int | None = None
    dead_letter: str | None = None  # the dead-letter queue of its task queue
    sticky: bool = False  # same sticky key, same worker (distribution_policy sticky)
    affinity: str | None = None  # the one worker (node name) its steps go to
    retry_local: bool = False  # failure_mode retry_local: one more try in the process that saw the last failure
    fail_fast: bool = False  # failure_mode fail_fast: a failure is final (a lost worker still redelivers)
    max_wait: float | None = None  # seconds a step may wait in the queue: the lower of the two fields below
    max_wait_field: str = "max_wait_seconds"  # or "message_retention", its task queue's
    fallback_to_local: bool = False  # run in the publishing process when no worker consumes the queue
    visibility_timeout: float | None = None  # at_least_once on Redis: how long a step may run unacknowledged

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolRoute:
        values = dict(data)
        values["allowed_tools"] = tuple(values.get("allowed_tools", ()))
        values["allowed_agents"] = tuple(values.get("allowed_agents", ()))
        if values.get("countdowns") is not None:
            values["countdowns"] = tuple(values["countdowns"])
        values["arguments"] = values.get("arguments") or {}
        return cls(**values)


@dataclass(frozen=True)
class Plan:
    """The nodes of one run, in topological order."""

    kind: str  # "block" | "workflow" | "program"
    name: str
    nodes: tuple[PlanNode, ...]
    pools: dict[str, PoolRoute] = field(default_factory=dict)  # the program's worker pools, by name
    by_name: dict[str, PlanNode] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({n.name: n for n in self.nodes})

    def to_json(self) -> str:
        """The plan as JSON (computed once); ``TypeError``/``ValueError`` when a step carries non-JSON data."""
        return self.json_text

    @cached_property
    def json_text(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "name": self.name,
                "nodes": [
                    {"name": n.name, "block": block_data(n.block), "depends_on": list(n.depends_on), "single": n.single}
                    for n in self.nodes
                ],
                "pools": {name: asdict(route) for name, route in self.pools.items()},
            },
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan ``to_json`` wrote. A run's plan is read at each launch and settle of its nodes: the last
        few read are kept (a plan never changes), so a process reads each run's plan once."""
        return _plan_from_json(text)

    def sinks(self) -> list[str]:
        needed = {d for n in self.nodes for d in n.depends_on}
        return [n.name for n in self.nodes if n.name not in needed]


@lru_cache(maxsize=16)
def _plan_from_json(text: str) -> Plan:
    data = json.loads(text)
    nodes = tuple(
        PlanNode(n["name"], ParallelBlockSpec.model_validate(n["block"]), tuple(n["depends_on"]), n["single"])
        for n in data["nodes"]
    )
    pools = {name: PoolRoute.from_dict(route) for name, route in data.get("pools", {}).items()}
    return Plan(data["kind"], data["name"], nodes, pools)


def block_data(block: ParallelBlockSpec) -> dict[str, Any]:
    """A block as plain data for the plan's JSON, non-default fields only.

    Its steps are dumped in Python mode: a payload value JSON cannot carry (bytes, a datetime, NaN)
    stays as it is, for ``json.dumps`` to refuse, where "json" mode would quietly turn it into a
    string. Its ``metadata`` (the IR's, which Namel3ss fills with what it likes) is dumped in
    "json" mode, as it always was.
    """
    data = block.model_dump(exclude_defaults=True, exclude={"metadata"})
    if block.metadata:
        data["metadata"] = block.model_dump(mode="json", include={"metadata"})["metadata"]
    return data
