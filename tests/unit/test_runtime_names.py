"""Every public name of ``namel3ss.runtime`` is exported by ``namel3ss_celery.runtime``, with the Namel3ss
signatures and defaults (parameters may be added after them, never renamed, reordered or re-defaulted)."""

from __future__ import annotations

import importlib
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


def test_no_name_is_exported_twice() -> None:
    assert sorted(n for n in set(runtime.__all__) if runtime.__all__.count(n) > 1) == []


# The public names each module of ``namel3ss.runtime`` defines (its classes, functions and module-level values;
# not what it imports, nor its ``logger``), read in namel3ss-Ai/namel3ss-programming-language at be3abcdd5e45.
NAMEL3SS_MODULE_NAMES = {
    "parallel": {
        "ParallelStrategy",
        "ParallelTaskResult",
        "ParallelExecutionResult",
        "ParallelExecutionContext",
        "current_parallel_context",
        "ParallelExecutor",
        "execute_parallel_steps",
        "get_current_parallel_context",
    },
    "distributed": {
        "TaskStatus",
        "WorkerStatus",
        "BrokerType",
        "DistributedTask",
        "WorkerNode",
        "DistributedExecutionResult",
        "MessageBroker",
        "RedisMessageBroker",
        "RabbitMQMessageBroker",
        "MemoryMessageBroker",
        "DistributedTaskQueue",
        "create_message_broker",
        "create_distributed_queue",
    },
    "coordinator": {
        "DistributedParallelExecutor",
        "create_distributed_executor",
        "get_distributed_executor",
        "execute_distributed_parallel",
    },
    "events": {
        "EventType",
        "EventPriority",
        "Event",
        "EventHandler",
        "EventSubscription",
        "EventBus",
        "MemoryEventBus",
        "RedisEventBus",
        "EventDrivenExecutor",
        "get_event_executor",
        "publish_event",
        "register_event_workflow",
        "create_reactive_workflow_example",
    },
}


@pytest.mark.parametrize("module", sorted(NAMEL3SS_MODULE_NAMES))
def test_each_runtime_module_offers_the_names_of_its_namel3ss_module(module: str) -> None:
    ours = importlib.import_module(f"namel3ss_celery.runtime.{module}")
    assert sorted(n for n in NAMEL3SS_MODULE_NAMES[module] if not hasattr(ours, n)) == []
    exported = getattr(ours, "__all__", None)
    if exported is not None:  # what ``from ... import *`` gives has them too
        assert sorted(NAMEL3SS_MODULE_NAMES[module] - set(exported)) == []


def test_a_name_in_two_modules_is_one_object() -> None:
    """``namel3ss.runtime.X`` and ``namel3ss.runtime.<module>.X`` are the same object, as there."""
    for module, names in NAMEL3SS_MODULE_NAMES.items():
        ours = importlib.import_module(f"namel3ss_celery.runtime.{module}")
        assert [n for n in names if n in runtime.__all__ and getattr(ours, n) is not getattr(runtime, n)] == []


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
    (
        "DistributedParallelExecutor.execute_parallel_block",
        [
            ("self", EMPTY),
            ("parallel_block", EMPTY),
            ("step_executor", EMPTY),
            ("context", None),
            ("security_context", None),
            ("force_distribution", False),
            ("force_local", False),
        ],
    ),
    ("create_distributed_executor", [("broker_type", "redis"), ("broker_config", None), ("kwargs", EMPTY)]),
    (
        "execute_distributed_parallel",
        [("parallel_block", EMPTY), ("step_executor", EMPTY), ("context", None), ("kwargs", EMPTY)],
    ),
    (
        "ParallelExecutor",
        [
            ("default_max_concurrency", 10),
            ("default_timeout", 300.0),
            ("enable_tracing", True),
            ("enable_security", True),
            ("thread_pool_size", 4),
            ("security_manager", None),
        ],
    ),
    (
        "ParallelExecutor.execute_parallel_block",
        [
            ("self", EMPTY),
            ("parallel_block", EMPTY),
            ("step_executor", EMPTY),
            ("context", None),
            ("security_context", None),
            ("parent_span_id", None),
        ],
    ),
    (
        "execute_parallel_steps",
        [
            ("steps", EMPTY),
            ("step_executor", EMPTY),
            ("strategy", "all"),
            ("max_concurrency", 10),
            ("timeout_seconds", None),
            ("context", None),
        ],
    ),
    (
        "EventDrivenExecutor",
        [("event_bus", None), ("enable_websocket", True), ("websocket_host", "localhost"), ("websocket_port", 8765)],
    ),
    (
        "EventDrivenExecutor.publish_event",
        [
            ("self", EMPTY),
            ("event_type", EMPTY),
            ("source", EMPTY),
            ("data", EMPTY),
            ("priority", runtime.EventPriority.NORMAL),
            ("correlation_id", None),
        ],
    ),
    (
        "EventDrivenExecutor.register_event_handler",
        [("self", EMPTY), ("event_types", EMPTY), ("handler_func", EMPTY), ("filters", None), ("priority", 0)],
    ),
    (
        "EventDrivenExecutor.register_workflow_trigger",
        [
            ("self", EMPTY),
            ("workflow_name", EMPTY),
            ("trigger_event_type", EMPTY),
            ("workflow_config", EMPTY),
            ("filters", None),
        ],
    ),
    ("RedisEventBus", [("redis_url", "redis://localhost:6379")]),
    ("publish_event", [("event_type", EMPTY), ("source", EMPTY), ("data", EMPTY), ("kwargs", EMPTY)]),
    (
        "register_event_workflow",
        [("workflow_name", EMPTY), ("trigger_event_type", EMPTY), ("workflow_config", EMPTY), ("kwargs", EMPTY)],
    ),
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
        "ParallelExecutor.execute_parallel_block",
        "execute_parallel_steps",
        "execute_distributed_parallel",
        "create_distributed_executor",
        "events.create_reactive_workflow_example",
    ],
)
def test_the_namel3ss_coroutines_are_coroutines(path: str) -> None:
    assert inspect.iscoroutinefunction(resolve(path))


def test_plain_functions_stay_plain() -> None:
    assert not inspect.iscoroutinefunction(runtime.create_message_broker)
    assert not inspect.iscoroutinefunction(runtime.get_current_parallel_context)
