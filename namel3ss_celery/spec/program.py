"""Workflows and whole programs: the DAG of steps and blocks a file describes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .infra import (
    DistributedExecutionSpec,
    EventHandlerSpec,
    EventTriggerSpec,
    TaskQueueSpec,
    WorkerPoolSpec,
)
from .models import ParallelBlockSpec, Spec, bounded_payload, check_node_name, target_from_type


class WorkflowNodeSpec(BaseModel):
    """A node of a workflow: one step (``target``) or a reference to a block (``block``).

    Extra keys are the step's payload, as on ``StepSpec``.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(min_length=1)
    target: str | None = None
    block: str | None = None
    depends_on: list[str] = Field(default_factory=list)

    _target_from_type = model_validator(mode="before")(target_from_type)
    _bounded_nesting = model_validator(mode="before")(bounded_payload)
    _name_without_colon = field_validator("name")(check_node_name)

    @model_validator(mode="after")
    def _one_kind(self) -> WorkflowNodeSpec:
        if (self.target is None) == (self.block is None):
            raise ValueError("a workflow node names exactly one of 'target' (a step) or 'block' (a parallel block)")
        return self


class WorkflowSpec(Spec):
    """A named DAG of nodes; a node's output reaches later nodes as ``context["outputs"][name]``."""

    name: str = Field(min_length=1)
    steps: list[WorkflowNodeSpec] = Field(min_length=1)
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_dag(self) -> WorkflowSpec:
        _unique((node.name for node in self.steps), "node")
        check_dag({node.name: node.depends_on for node in self.steps}, "node")
        return self


class ProgramSpec(Spec):
    """Everything a Namel3ss program file declares for this backend."""

    name: str | None = None
    parallel_blocks: list[ParallelBlockSpec] = Field(default_factory=list)
    worker_pools: list[WorkerPoolSpec] = Field(default_factory=list)
    task_queues: list[TaskQueueSpec] = Field(default_factory=list)
    distributed_configs: list[DistributedExecutionSpec] = Field(default_factory=list)
    event_triggers: list[EventTriggerSpec] = Field(default_factory=list)
    event_handlers: list[EventHandlerSpec] = Field(default_factory=list)
    workflows: list[WorkflowSpec] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> ProgramSpec:
        for kind, names in (
            ("parallel block", [b.name for b in self.parallel_blocks]),
            ("worker pool", [p.name for p in self.worker_pools]),
            ("task queue", [q.name for q in self.task_queues]),
            ("workflow", [w.name for w in self.workflows]),
            ("event trigger", [t.name for t in self.event_triggers]),  # claims, counts and beat entries go by name
            ("event handler", [h.name for h in self.event_handlers]),
        ):
            _unique(names, kind)
        check_dag({b.name: b.depends_on for b in self.parallel_blocks}, "parallel block")
        blocks = {b.name for b in self.parallel_blocks}
        for workflow in self.workflows:
            for node in workflow.steps:
                if node.block is not None and node.block not in blocks:
                    raise ValueError(
                        f"workflow {workflow.name!r} node {node.name!r} names block {node.block!r}, "
                        f"which is not in parallel_blocks (known: {sorted(blocks) or 'none'})"
                    )
        return self

    def block(self, name: str) -> ParallelBlockSpec:
        """The block called ``name``; ``KeyError`` if there is none."""
        for block in self.parallel_blocks:
            if block.name == name:
                return block
        raise KeyError(name)


def _unique(names: Iterable[str], kind: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two {kind}s are named {name!r}")
        seen.add(name)


def check_dag(edges: Mapping[str, list[str]], kind: str) -> list[str]:
    """Check that ``depends_on`` edges name known nodes and form no cycle; return a topological order."""
    for name, deps in edges.items():
        for dep in deps:
            if dep not in edges:
                raise ValueError(f"{kind} {name!r} depends on {dep!r}, which does not exist")
            if dep == name:
                raise ValueError(f"{kind} {name!r} depends on itself")
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    for root in edges:
        if state.get(root):
            continue
        state[root] = 1
        path, pending = [root], [iter(edges[root])]  # a stack, not recursion: a chain may be long
        while path:
            step = next(pending[-1], None)
            if step is None:
                state[path[-1]] = 2
                order.append(path.pop())
                pending.pop()
            elif state.get(step) == 1:
                cycle = path[path.index(step) :] + [step]
                raise ValueError(f"{kind}s form a cycle: {' -> '.join(cycle)}")
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                pending.append(iter(edges[step]))
    return order
