"""What the chaos soak measures: outcomes, steps counted twice, keys without a TTL, recovery times, stuck runs.

Gathered here from the results and the private Redis; ``bench.soak_print`` prints
them, one per line (see "Chaos soak" in bench/README.md):

- runs dispatched, completed, failed (by reason), timeout, cancelled, and
  ``STUCK`` (still ``running`` at the final deadline: the headline);
- steps counted twice in a result: a block result naming a step twice, or
  whose counts do not match its steps (more results than steps, a status
  count that is not the number of results with that status), or a
  ``map_reduce`` sum that is not the sum of its steps' values; other wrong
  values are listed beside it;
- step bodies that ran to their end twice for one attempt (the steps' own
  probes: ``bench.soak_steps``);
- keys left without a TTL in the private Redis, by key pattern, every key
  but kombu's own broker keys (``KOMBU_KEYS``);
- recovery: for each run that was running when a fault began, seconds from
  the last such fault to the run's end (min, median, p90, max).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from bench.soak_specs import BlockPlan, SoakRun
from bench.soak_steps import END_KEY, START_KEY
from namel3ss_celery import ParallelExecutionResult, WorkflowResult
from namel3ss_celery.plan.fields import run_key

if TYPE_CHECKING:
    from bench.soak_chaos import Chaos, Fault
    from bench.soak_cluster import Exit

RunResult = ParallelExecutionResult | WorkflowResult
FINAL = ("completed", "failed", "timeout", "cancelled")
STUCK_SHOWN = 5  # stuck runs whose record is printed (and unplanned failures listed)
KOMBU_KEYS = (  # kombu's broker keys, left out of the TTL count (patterns as key_pattern writes them)
    "_kombu.* (bindings, delayed-delivery index)",
    "unacked, unacked_index, unacked_mutex",
    "<queue> and <queue>\\x06\\x16<n> (the queue's priority lists)",
    "*.reply.celery.pidbox (control replies)",
)
COUNTED_TWICE = ("step named twice", "more results than steps", "status count off", "map_reduce sum off")


@dataclass
class Ended:
    """How one run ended: its status (or ``stuck``, ``not dispatched``) and result."""

    run: SoakRun
    run_id: str | None
    dispatched_at: float  # epoch seconds when its dispatch began
    status: str
    result: RunResult | None

    @property
    def ended_at(self) -> float | None:
        return self.result.end_time if self.result is not None else None


@dataclass
class KeyScan:
    """Every key of the private Redis: without a TTL by pattern, all by pattern, and kombu's left out."""

    without_ttl: Counter[str] = field(default_factory=Counter)
    counted: Counter[str] = field(default_factory=Counter)
    kombu: Counter[str] = field(default_factory=Counter)


@dataclass
class Report:
    """Everything ``print_report`` prints."""

    ended: list[Ended]
    faults: list[Fault]
    missed_faults: dict[str, int]
    chaos_error: BaseException | None
    failed_tries: dict[str, tuple[str, str]]  # run id of a dispatch try that raised -> (error, its record now)
    stuck: dict[str, dict[str, str]]  # "HGETALL <key>" -> fields (abbreviated), keys of the first stuck runs
    problems: list[tuple[Ended, str, str]]  # (run, block, problem)
    keys: KeyScan
    repeats: dict[str, list[str]]  # "started" / "ended" -> probe keys counted more than once
    exits: list[Exit] = field(default_factory=list)
    error_lines: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    started_at: float = 0.0  # epoch seconds of the first dispatch

    @classmethod
    def gather(
        cls,
        client: redis.Redis[str],
        queue: str,
        ended: list[Ended],
        chaos: Chaos,
        tries: dict[str, tuple[str, str]],
        stuck: dict[str, dict[str, str]],
    ) -> Report:
        """Read what the report needs from the results and the private Redis (workers stopped)."""
        problems = [(item, block, problem) for item in ended for block, problem in run_problems(item)]
        return cls(
            ended,
            list(chaos.faults),
            dict(chaos.missed),
            chaos.error,
            tries,
            stuck,
            problems,
            scan_keys(client, queue),
            probe_repeats(client),
        )

    @property
    def stuck_count(self) -> int:
        return sum(1 for item in self.ended if item.status == "stuck")


# --- results ------------------------------------------------------------------------


def block_results(result: RunResult) -> list[ParallelExecutionResult]:
    """The block results of a run: itself, or each block of a workflow or program."""
    return list(result.blocks.values()) if isinstance(result, WorkflowResult) else [result]


def run_problems(item: Ended) -> list[tuple[str, str]]:
    """(block, problem) for every block result of the run that is wrong."""
    if item.result is None:
        return []
    found = []
    for block in block_results(item.result):
        plan = item.run.blocks.get(block.block_name)
        if plan is None:
            found.append((block.block_name, "block not in the run"))
            continue
        found += [(block.block_name, problem) for problem in block_problems(block, plan)]
    return found


def block_problems(block: ParallelExecutionResult, plan: BlockPlan) -> list[str]:
    """What is wrong with one block result against what its steps return (``COUNTED_TWICE`` first)."""
    names = [r.task_id for r in block.results]
    statuses = Counter(str(r.status) for r in block.results)
    problems = []
    if len(names) != len(set(names)):
        problems.append("step named twice")
    if len(names) > len(plan.values) or block.total_tasks != len(plan.values):
        problems.append("more results than steps")
    counts = {"completed": block.completed_tasks, "failed": block.failed_tasks, "cancelled": block.cancelled_tasks}
    if any(statuses.get(status, 0) != count for status, count in counts.items()):
        problems.append("status count off")
    completed = str(block.overall_status) == "completed"
    if completed and plan.strategy == "map_reduce" and block.final_result != sum(plan.values.values()):
        problems.append("map_reduce sum off")
    if completed and plan.strategy == "all" and block.final_result != plan.values:
        problems.append("all: final_result off")
    if any(str(r.status) == "completed" and r.result != plan.values.get(r.task_id) for r in block.results):
        problems.append("a step's result is not its value")
    if any(str(r.status) == "completed" and r.task_id in plan.always_fails for r in block.results):
        problems.append("a step that always fails completed")
    return problems


def failure_reason(result: RunResult) -> str:
    """A failed run's error, with names, ids and numbers made generic so that reasons can be counted."""
    text = result.error_message or "(no error message)"
    text = re.sub(r"[0-9a-f]{32}|[0-9a-f-]{36}", "<id>", text)
    text = re.sub(r"node '[^']+'", "node '<node>'", text)
    text = re.sub(r"'s\d+'", "'s<i>'", text)
    text = re.sub(r"\bs\d+:", "s<i>:", text)
    text = re.sub(r"\b\d+ of \d+\b", "<k> of <n>", text)
    return text[:160]


# --- Redis ----------------------------------------------------------------------------


def key_pattern(key: str, queue: str) -> tuple[str, bool]:
    """The key's pattern (ids and numbers made generic) and whether it is one of kombu's broker keys."""
    if key.startswith("_kombu.") or key in ("unacked", "unacked_index", "unacked_mutex"):
        return key, True
    if key == queue or key.startswith(f"{queue}\x06\x16") or key.endswith(".reply.celery.pidbox"):
        return key.replace("\x06\x16", "\\x06\\x16"), True
    pattern = re.sub(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", key)
    pattern = re.sub(r"(:steps:|:list:|:start:|:end:).*", r"\1*", pattern)
    return pattern, False


def scan_keys(client: redis.Redis[str], queue: str) -> KeyScan:
    """SCAN every key; count those without a TTL (TTL -1) by pattern, kombu's own apart."""
    scan = KeyScan()
    for key in client.scan_iter(count=1000):
        pattern, kombu = key_pattern(key, queue)
        if kombu:
            scan.kombu[pattern] += 1
            continue
        scan.counted[pattern] += 1
        if client.ttl(key) == -1:
            scan.without_ttl[pattern] += 1
    return scan


def probe_repeats(client: redis.Redis[str]) -> dict[str, list[str]]:
    """The step probes counted more than once: bodies started, and bodies ended, twice for one attempt."""
    repeats: dict[str, list[str]] = {}
    for phase, template in (("started", START_KEY), ("ended", END_KEY)):
        prefix = template.split("{", 1)[0]
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        values = client.mget(keys) if keys else []
        repeats[phase] = sorted(
            key.removeprefix(prefix) for key, v in zip(keys, values, strict=True) if v and int(v) > 1
        )
    return repeats


def stuck_records(client: redis.Redis[str], ended: list[Ended]) -> dict[str, dict[str, str]]:
    """The keys of the first ``STUCK_SHOWN`` stuck runs, each value cut to 160 characters.

    Keyed ``HGETALL n3:run:<id>`` (its record) and, for its other keys, ``HGETALL`` of
    a hash (a block's step envelopes) or ``LRANGE`` of a list; fields keep their names.
    """
    dumps: dict[str, dict[str, str]] = {}
    for item in [e for e in ended if e.status == "stuck"][:STUCK_SHOWN]:
        assert item.run_id is not None
        key = run_key(item.run_id)
        dumps[f"HGETALL {key}"] = {name: abbreviate(value) for name, value in client.hgetall(key).items()}
        for other in sorted(client.scan_iter(match=f"{key}:*")):
            if ":steps:" in other:  # a hash of step envelopes; the others (``:list:``, ``:done``) are lists
                dumps[f"HGETALL {other}"] = {n: abbreviate(v) for n, v in client.hgetall(other).items()}
            else:
                dumps[f"LRANGE {other} 0 -1"] = {
                    str(i): abbreviate(v) for i, v in enumerate(client.lrange(other, 0, -1))
                }
    return dumps


# --- recovery ------------------------------------------------------------------------------


def recovery_times(ended: list[Ended], faults: list[Fault]) -> dict[str, list[float]]:
    """Seconds from the last fault a run lived through to its end, by the kind of that fault.

    ``kill`` and ``restart`` count for every run running when they began; a
    ``duplicate`` only for the run whose step it copied.
    """
    times: dict[str, list[float]] = {"kill or restart": [], "kill": [], "restart": [], "duplicate": []}
    for item in ended:
        end = item.ended_at
        if end is None:
            continue
        lived = [f for f in faults if item.dispatched_at < f.at < end]
        hard = [f for f in lived if f.kind in ("kill", "restart")]
        if hard:
            times["kill or restart"].append(end - hard[-1].at)
        for kind in ("kill", "restart"):
            of_kind = [f for f in lived if f.kind == kind]
            if of_kind:
                times[kind].append(end - of_kind[-1].at)
        mine = [f for f in lived if f.kind == "duplicate" and f.run == item.run_id]
        if mine:
            times["duplicate"].append(end - mine[-1].at)
    return times


def abbreviate(value: Any, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
