"""Every public name of ``namel3ss.runtime`` is exported by ``namel3ss_celery.runtime``, with the Namel3ss
signatures and defaults (parameters may be added after them, never renamed, reordered or re-defaulted)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import namel3ss_celery.runtime as runtime

# namel3ss.runtime.__all__
NAMEL3SS_RUNTIME_NAMES = {
    # parallel
    "ParallelExecutor",
    "ParallelStrategy",
    "ParallelExecutionResult",
    "ParallelExecutionContext",
    "ParallelTaskResult",
    "execute_parallel_steps",
    "get_current_parallel_context",
    # distributed
    "DistributedTaskQueue",
    "DistributedTask",
    "TaskStatus",
    "WorkerNode",
    "WorkerStatus",
    "BrokerType",
    "MessageBroker",
    "RedisMessageBroker",
    "RabbitMQMessageBroker",
    "MemoryMessageBroker",
    "create_message_broker",
    "create_distributed_queue",
    # coordinator
    "DistributedParallelExecutor",
    "create_distributed_executor",
    "get_distributed_executor",
    "execute_distributed_parallel",
    # events
    "EventDrivenExecutor",
    "Event",
    "EventType",
    "EventPriority",
    "EventHandler",
    "EventSubscription",
    "EventBus",
    "MemoryEventBus",
    "RedisEventBus",
    "get_event_executor",
    "publish_event",
    "register_event_workflow",
}


def test_every_exported_name_is_importable() -> None:
    missing = [name for name in runtime.__all__ if not hasattr(runtime, name)]
    assert missing == []


def test_every_namel3ss_runtime_name_is_exported() -> None:
    assert sorted(NAMEL3SS_RUNTIME_NAMES - set(runtime.__all__)) == []


def test_the_distributed_module_offers_its_namel3ss_names() -> None:
    from namel3ss_celery.runtime import distributed

    names = {n for n in NAMEL3SS_RUNTIME_NAMES if n in runtime.distributed.__all__}
    assert names == {n for n in distributed.__all__ if n not in {"DistributedExecutionResult", "task_handler"}}


EMPTY = inspect.Parameter.empty

# (callable, [(parameter, default)] in the Namel3ss order; EMPTY: required)
SIGNATURES: list[tuple[str, list[tuple[str, Any]]]] = [
    (
        "DistributedTaskQueue",
        [
            ("broker", EMPTY),
            ("queue_name", "default"),
            ("result_timeout", 300.0),
            ("max_workers", 10),
            ("enable_tracing", True),
            ("security_manager", None),
            ("enable_security", True),
        ],
    ),
    (
        "DistributedTaskQueue.submit_task",
        [
            ("self", EMPTY),
            ("task_type", EMPTY),
            ("payload", EMPTY),
            ("priority", 0),
            ("timeout_seconds", None),
            ("max_retries", 3),
        ],
    ),
    (
        "DistributedTaskQueue.submit_batch",
        [("self", EMPTY), ("tasks", EMPTY), ("priority", 0), ("timeout_seconds", None), ("max_retries", 3)],
    ),
    ("DistributedTaskQueue.get_task_result", [("self", EMPTY), ("task_id", EMPTY), ("timeout", None)]),
    ("DistributedTaskQueue.get_batch_results", [("self", EMPTY), ("task_ids", EMPTY), ("timeout", None)]),
    (
        "DistributedTaskQueue.register_worker",
        [
            ("self", EMPTY),
            ("worker_id", EMPTY),
            ("worker_type", EMPTY),
            ("capabilities", EMPTY),
            ("max_concurrent_tasks", 1),
        ],
    ),
    ("DistributedTaskQueue.start_worker", [("self", EMPTY), ("worker_id", EMPTY), ("task_handler", EMPTY)]),
    ("create_message_broker", [("broker_type", EMPTY), ("kwargs", EMPTY)]),
    ("create_distributed_queue", [("broker_type", "redis"), ("queue_name", "default"), ("broker_kwargs", EMPTY)]),
    ("RedisMessageBroker", [("redis_url", "redis://localhost:6379")]),
    ("RabbitMQMessageBroker", [("amqp_url", "amqp://localhost")]),
    ("MessageBroker.publish_task", [("self", EMPTY), ("queue_name", EMPTY), ("task", EMPTY)]),
    ("MessageBroker.consume_tasks", [("self", EMPTY), ("queue_name", EMPTY), ("callback", EMPTY)]),
    ("MessageBroker.publish_result", [("self", EMPTY), ("result_queue", EMPTY), ("task", EMPTY)]),
    ("MessageBroker.get_queue_size", [("self", EMPTY), ("queue_name", EMPTY)]),
    (
        "DistributedParallelExecutor",
        [
            ("broker_type", "redis"),
            ("broker_config", None),
            ("default_queue", None),  # Namel3ss: "namel3ss_parallel" (README, deviations)
            ("fallback_to_local", False),  # Namel3ss: True (README, deviations)
            ("max_distributed_tasks", 1000),
            ("distributed_timeout", 600.0),
            ("enable_auto_scaling", True),
        ],
    ),
    (
        "DistributedParallelExecutor.register_worker",
        [
            ("self", EMPTY),
            ("worker_id", EMPTY),
            ("worker_type", "namel3ss_worker"),
            ("capabilities", None),
            ("max_concurrent_tasks", 1),
        ],
    ),
    ("DistributedParallelExecutor.start_worker", [("self", EMPTY), ("worker_id", EMPTY), ("step_executor", EMPTY)]),
]


def resolve(path: str) -> Any:
    found: Any = runtime
    for part in path.split("."):
        found = getattr(found, part)
    return found


@pytest.mark.parametrize(("path", "expected"), SIGNATURES, ids=[path for path, _ in SIGNATURES])
def test_signatures_keep_the_namel3ss_parameters_and_defaults(path: str, expected: list[tuple[str, Any]]) -> None:
    parameters = list(inspect.signature(resolve(path)).parameters.values())
    positional = [
        (p.name, p.default) for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_KEYWORD)
    ]
    assert positional[: len(expected)] == expected


@pytest.mark.parametrize(
    "path",
    [
        "DistributedTaskQueue.start",
        "DistributedTaskQueue.stop",
        "DistributedTaskQueue.submit_task",
        "DistributedTaskQueue.get_task_result",
        "DistributedTaskQueue.get_queue_status",
        "MessageBroker.connect",
        "MessageBroker.disconnect",
        "create_distributed_queue",
        "get_distributed_executor",
        "DistributedParallelExecutor.initialize",
        "DistributedParallelExecutor.cleanup",
        "ParallelExecutor.cleanup",
    ],
)
def test_the_namel3ss_coroutines_are_coroutines(path: str) -> None:
    assert inspect.iscoroutinefunction(resolve(path))


def test_plain_functions_stay_plain() -> None:
    assert not inspect.iscoroutinefunction(runtime.create_message_broker)
    assert not inspect.iscoroutinefunction(runtime.get_current_parallel_context)
