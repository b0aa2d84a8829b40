"""The runs the soak dispatches: seeded, mixed strategies and small workflows, every block with a deadline.

A run is a single parallel block (three in four) or a workflow of 2 or 3
block nodes (``a -> b``, ``a, b -> c`` or ``a -> b, c``). Each block has 2 to 5
steps (``nap`` or ``nap_async``, sleeping 5 ms to 600 ms), one of the five
strategies and a ``timeout_seconds``: 20 to 40 s for a single block, 15 to
20 s for each workflow node, so no run may last more than ``MAX_BUDGET``.
About one step in ten fails on every attempt; a block with ``retry_failed``
(one in five) has steps that fail on their first attempt only.

With ``pool`` set, every run is a program whose steps name that worker pool,
with the pool and its task queue (``at_least_once``) declared beside them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("all", "collect", "map_reduce", "race", "any_success")
WORKFLOW_SHAPES = {  # node -> what it depends on
    "chain": {"a": [], "b": ["a"]},
    "join": {"a": [], "b": [], "c": ["a", "b"]},
    "fork": {"a": [], "b": ["a"], "c": ["a"]},
}
MAX_BUDGET = 40.0  # seconds: the longest any run may take by its blocks' deadlines


@dataclass(frozen=True)
class BlockPlan:
    """What one block should give: its step names, their values and which steps fail for good."""

    name: str
    strategy: str
    values: dict[str, int]
    always_fails: frozenset[str]


@dataclass
class SoakRun:
    """One run to dispatch: its spec, a label (``race`` or ``workflow:fork``) and the blocks it holds."""

    seq: int
    label: str
    spec: dict[str, Any]
    budget: float  # seconds its deadlines allow, along its longest path
    blocks: dict[str, BlockPlan] = field(default_factory=dict)


def make_runs(count: int, seed: int, pool: dict[str, Any] | None) -> list[SoakRun]:
    """``count`` runs drawn from ``random.Random(seed)``; with ``pool``, as programs on that pool."""
    rng = random.Random(seed)
    runs = [make_run(rng, seq) for seq in range(count)]
    if pool is not None:
        for run in runs:
            run.spec = on_pool(run.spec, pool)
    return runs


def make_run(rng: random.Random, seq: int) -> SoakRun:
    """A single block (3 in 4) or a small workflow of blocks."""
    if rng.random() < 0.75:
        block, plan = make_block(rng, f"r{seq}", rng.uniform(20, 40))
        return SoakRun(seq, plan.strategy, block, block["timeout_seconds"], {plan.name: plan})
    shape = rng.choice(sorted(WORKFLOW_SHAPES))
    blocks, plans = [], {}
    for node in WORKFLOW_SHAPES[shape]:
        block, plan = make_block(rng, f"r{seq}{node}", rng.uniform(15, 20))
        blocks.append(block)
        plans[plan.name] = plan
    nodes = [
        {"name": node, "block": f"r{seq}{node}", "depends_on": deps} for node, deps in WORKFLOW_SHAPES[shape].items()
    ]
    spec = {"parallel_blocks": blocks, "workflows": [{"name": f"w{seq}", "steps": nodes}]}
    budget = 2 * max(b["timeout_seconds"] for b in blocks)
    return SoakRun(seq, f"workflow:{shape}", spec, budget, plans)


def make_block(rng: random.Random, name: str, timeout: float) -> tuple[dict[str, Any], BlockPlan]:
    """A block spec of 2 to 5 steps and what it should give."""
    strategy = rng.choice(STRATEGIES)
    retry = rng.random() < 0.2
    steps = [make_step(rng, f"{name}.{i}", retry) for i in range(rng.randint(2, 5))]
    block: dict[str, Any] = {"name": name, "strategy": strategy, "timeout_seconds": round(timeout, 1), "steps": steps}
    if strategy == "map_reduce":
        block["reduce_function"] = "sum"
    if strategy == "all":
        block["fail_fast"] = rng.random() < 0.5
    if retry:
        block.update(retry_failed=True, max_retries=1)
    plan = BlockPlan(
        name,
        strategy,
        {s["name"]: s["value"] for s in steps},
        frozenset(s["name"] for s in steps if s.get("fail") == "always"),
    )
    return block, plan


def make_step(rng: random.Random, token: str, retry: bool) -> dict[str, Any]:
    """One step: its target, how long it sleeps, its value and whether it fails."""
    roll = rng.random()
    seconds = (
        rng.uniform(0.005, 0.05) if roll < 0.7 else rng.uniform(0.05, 0.3) if roll < 0.95 else rng.uniform(0.3, 0.6)
    )
    step: dict[str, Any] = {
        "name": "s" + token.rsplit(".", 1)[1],
        "target": rng.choice(("nap", "nap_async")),
        "seconds": round(seconds, 3),
        "value": rng.randint(1, 1000),
        "token": token,
    }
    fails = rng.random()
    if fails < 0.1:
        step["fail"] = "always"
    elif retry and fails < 0.3:
        step["fail"] = "first"
    return step


def on_pool(spec: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (a block or a program) as a program whose every step names ``pool``, declared with its task queue."""
    if "parallel_blocks" not in spec:
        spec = {"parallel_blocks": [spec]}
    blocks = [
        {**block, "steps": [{**step, "worker_pool": pool["worker_pool"]["name"]} for step in block["steps"]]}
        for block in spec["parallel_blocks"]
    ]
    return {
        **spec,
        "parallel_blocks": blocks,
        "worker_pools": [pool["worker_pool"]],
        "task_queues": [pool["task_queue"]],
    }


def soak_pool(queue: str, concurrency: int) -> dict[str, Any]:
    """The soak's worker pool (prefork, fixed size) and its ``at_least_once`` task queue.

    The visibility timeout is short (15 s) so a step whose worker was killed comes
    back within a block's deadline; the pool sets no step time limit (steps last
    at most 0.6 s), which a visibility timeout that short would forbid.
    """
    return {
        "worker_pool": {
            "name": "soak",
            "queue_name": queue,
            "auto_scaling": False,
            "min_workers": concurrency,
            "max_workers": concurrency,
        },
        "task_queue": {
            "name": queue,
            "reliability": "at_least_once",
            "max_retries": 2,
            "retry_backoff": "fixed",
            "initial_retry_delay": 0.5,
            "max_retry_delay": 2,
            "visibility_timeout": 15,
        },
    }
