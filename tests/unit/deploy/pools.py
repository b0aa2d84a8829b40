"""Pools the deploy tests render: a scaled prefork pool and a fixed threads pool."""

from __future__ import annotations

from typing import Any

from namel3ss_celery.deploy import render
from namel3ss_celery.spec import ProgramSpec, load_program

CPU = {
    "name": "cpu",
    "queue_name": "cpu_q",
    "min_workers": 1,
    "max_workers": 6,
    "target_value": 3,
    "max_memory_mb": 512,
    "max_cpu_cores": 1.5,
    "timeout_seconds": 60,
    "environment_variables": {"OMP_NUM_THREADS": "1", "PRICE": "5$ 100%"},
}
IO = {
    "name": "io",
    "queue_name": "io_q",
    "min_workers": 3,
    "max_workers": 3,
    "auto_scaling": False,
    "worker_config": {"pool": "threads", "concurrency": 12},
}


def program(*pools: dict[str, Any], queues: list[dict[str, Any]] | None = None) -> ProgramSpec:
    return load_program({"worker_pools": list(pools or (CPU, IO)), "task_queues": queues or []})


STEPS = ("proj.steps", "proj.more_steps")


def rendered(spec: ProgramSpec, target: str, **options: Any) -> dict[str, str]:
    """``deploy.render`` with the test step modules unless the test names its own."""
    options.setdefault("step_modules", STEPS)
    return render(spec, target, **options)
