"""Distributed steps (``DistributedExecutionSpec``): how a pool's steps reach its workers.

A program's ``distributed_configs`` hold at most one config per worker pool
(``worker_pool``); it applies to every step routed to that pool. What each
field becomes:

- ``distribution_policy``:
  ``round_robin`` and ``load_based`` are the pool's queue with prefetch 1
  (``worker_argv``): the broker hands the next step to whichever worker asks
  first, and a worker asks only when it has a free process, so a busy worker
  is skipped. ``random`` is the same queue: no Celery broker places messages at
  random, and a random choice among idle workers is what prefetch 1 gives in
  effect. ``locality_aware`` sends the steps to the region's queue
  ``<queue>.<locality_preference>``, which only the pool's workers started
  with that region (``--region``) consume. ``sticky`` sends every step with
  the same key (its ``sticky_key`` field, else its target) to the same worker,
  through Celery's per-worker direct queues (``worker_direct``).
- ``worker_affinity``: a worker's node name (``pool@host``); the steps go to
  that worker's direct queue only.
- ``avoid_workers``: node names or shell patterns (``gpu@old-*``); a pool
  worker whose name matches refuses to start, and no step is pinned to one.
- ``required_capabilities``, ``required_memory_mb``, ``required_cpu_cores``:
  checked against the pool's ``capabilities``, ``max_memory_mb`` and
  ``max_cpu_cores`` before anything is published.
- ``failure_mode``: ``retry_remote`` retries on the pool's workers (the task
  queue's retries); ``fail_fast`` never retries; ``retry_local`` retries as
  retry_remote and then once more at once in the process that saw the last
  failure, without going back to the queue.
- ``max_wait_seconds``: a step still queued after that long is dropped by the
  worker that receives it and fails, saying so.
- ``fallback_to_local``: when no worker consumes the step's queue at the time
  it is published, the publishing process runs it itself; its result says
  ``executed_on: local``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from ..errors import RoutingError
from ..spec import DistributedExecutionSpec, DistributionPolicy, ProgramSpec, WorkerPoolSpec

STICKY_KEY_FIELD = "sticky_key"  # the step field that holds a sticky step's key (default: its target)


def distribution_of(program: ProgramSpec, pool: str) -> DistributedExecutionSpec | None:
    """The distributed config of worker pool ``pool``, or ``None``."""
    return next((c for c in program.distributed_configs if c.worker_pool == pool), None)


def check_distribution(program: ProgramSpec) -> None:
    """Refuse a distributed config that names no pool, repeats one, or asks more than its pool offers.

    Raises:
        RoutingError: naming the config (``distributed_configs[i]``) and what is wrong.
    """
    pools = {pool.name: pool for pool in program.worker_pools}
    seen: set[str] = set()
    for index, config in enumerate(program.distributed_configs):
        where = f"distributed_configs[{index}] (worker_pool {config.worker_pool!r})"
        pool = pools.get(config.worker_pool)
        if pool is None:
            known = ", ".join(sorted(pools)) or "none"
            raise RoutingError(f"{where}: no such worker pool; pools: {known}")
        if config.worker_pool in seen:
            raise RoutingError(f"{where}: a pool takes one distributed config, and this is its second")
        seen.add(config.worker_pool)
        for problem in _problems(config, pool):
            raise RoutingError(f"{where}: {problem}")


def step_queue(config: DistributedExecutionSpec | None, pool: WorkerPoolSpec) -> str:
    """The queue a pool's steps are published to (before sticky or affinity pick a worker's own queue)."""
    if config is not None and config.distribution_policy == DistributionPolicy.LOCALITY_AWARE:
        return region_queue(pool.queue_name, str(config.locality_preference))
    return pool.queue_name


def region_queue(queue: str, region: str) -> str:
    """The queue of one region of a pool: ``<queue>.<region>``."""
    return f"{queue}.{region}"


def regions_of(program: ProgramSpec, pool: str) -> list[str]:
    """The regions a pool's steps are sent to (its locality_aware config's preference), for its workers."""
    config = distribution_of(program, pool)
    if config is not None and config.distribution_policy == DistributionPolicy.LOCALITY_AWARE:
        return [str(config.locality_preference)]
    return []


def avoided(config: DistributedExecutionSpec | None, nodename: str) -> str | None:
    """The ``avoid_workers`` entry that ``nodename`` matches (a name or a shell pattern), or ``None``."""
    return matching(config.avoid_workers, nodename) if config is not None else None


def matching(patterns: Sequence[str], nodename: str) -> str | None:
    """The first of ``patterns`` (node names or shell patterns) that ``nodename`` matches, or ``None``."""
    return next((p for p in patterns if fnmatchcase(nodename, p)), None)


def _problems(config: DistributedExecutionSpec, pool: WorkerPoolSpec) -> list[str]:
    problems = []
    if config.queue_name is not None and config.queue_name != pool.queue_name:
        problems.append(
            f"queue_name {config.queue_name!r} is not the pool's queue {pool.queue_name!r}; a pool has one queue "
            f"(leave queue_name unset, or use locality_aware for a region's queue)"
        )
    missing = sorted(set(config.required_capabilities) - set(pool.capabilities))
    if missing:
        problems.append(
            f"requires capabilities {missing} that the pool does not list (capabilities: {pool.capabilities})"
        )
    if config.required_memory_mb is not None and (pool.max_memory_mb or 0) < config.required_memory_mb:
        problems.append(f"requires {config.required_memory_mb} MB but the pool's max_memory_mb is {pool.max_memory_mb}")
    if config.required_cpu_cores is not None and (pool.max_cpu_cores or 0) < config.required_cpu_cores:
        problems.append(
            f"requires {config.required_cpu_cores} CPU cores but the pool's max_cpu_cores is {pool.max_cpu_cores}"
        )
    if config.distribution_policy == DistributionPolicy.LOCALITY_AWARE and not config.locality_preference:
        problems.append("locality_aware needs locality_preference (the region whose queue the steps go to)")
    if config.locality_preference and config.distribution_policy != DistributionPolicy.LOCALITY_AWARE:
        problems.append(f"locality_preference is set but distribution_policy is {config.distribution_policy}")
    if config.worker_affinity is not None:
        if config.distribution_policy == DistributionPolicy.STICKY:
            problems.append("worker_affinity pins every step to one worker, which sticky would not: choose one")
        elif avoided(config, config.worker_affinity):
            problems.append(f"worker_affinity {config.worker_affinity!r} is also in avoid_workers")
    return problems
