"""The Namel3ss runtime API on namel3ss-celery: the ``namel3ss.runtime`` names, with Celery underneath.

Code written for Namel3ss runs after changing its import line::

    from namel3ss_celery.runtime import execute_parallel_steps, create_distributed_executor

``execute_parallel_steps`` and ``ParallelExecutor`` run in this process (the
local executor, with exactly the workers' semantics); the distributed executor
sends blocks to Celery workers. Its step executor must be something a worker can
find: a registered step, or a module-level function of a module listed in
``NAMEL3SS_CELERY_STEP_MODULES`` (sent as ``module:function``). Anything else
is refused, unless the call asked for local fallback; every result says where
it ran (``metadata["executed_on"]``). ``DistributedTaskQueue`` (``create_distributed_queue``) is a Celery
queue of tasks handled by workers in this process or by ``celery -A namel3ss_celery worker -Q <queue>``. The Namel3ss defects are not carried
over: a failed ``all`` block, and a race whose first finisher failed, are
``failed``.
"""

from __future__ import annotations

from ..results import ParallelExecutionResult, ParallelTaskResult
from ..spec import ParallelStrategy
from .brokers import broker_settings
from .capabilities import capability_queue, worker_queues
from .coordinator import (
    DistributedParallelExecutor,
    create_distributed_executor,
    execute_distributed_parallel,
    get_distributed_executor,
)
from .distributed import (
    BrokerType,
    DistributedExecutionResult,
    DistributedTask,
    DistributedTaskQueue,
    MemoryMessageBroker,
    MessageBroker,
    RabbitMQMessageBroker,
    RedisMessageBroker,
    TaskStatus,
    WorkerNode,
    WorkerStatus,
    create_distributed_queue,
    create_message_broker,
    task_handler,
)
from .events import (
    Event,
    EventBus,
    EventDrivenExecutor,
    EventHandler,
    EventPriority,
    EventSubscription,
    EventType,
    MemoryEventBus,
    RedisEventBus,
    get_event_executor,
    publish_event,
    register_event_workflow,
)
from .parallel import (
    LOCAL_TARGET,
    ParallelExecutionContext,
    ParallelExecutor,
    execute_parallel_steps,
    get_current_parallel_context,
)

__all__ = [
    "DistributedParallelExecutor",
    "ParallelExecutionContext",
    "ParallelExecutionResult",
    "ParallelExecutor",
    "ParallelStrategy",
    "ParallelTaskResult",
    "broker_settings",
    "create_distributed_executor",
    "execute_distributed_parallel",
    "execute_parallel_steps",
    "get_current_parallel_context",
    "get_distributed_executor",
    "LOCAL_TARGET",
    # the distributed task queue (runtime/distributed.py)
    "BrokerType",
    "DistributedExecutionResult",
    "DistributedTask",
    "DistributedTaskQueue",
    "MemoryMessageBroker",
    "MessageBroker",
    "RabbitMQMessageBroker",
    "RedisMessageBroker",
    "TaskStatus",
    "WorkerNode",
    "WorkerStatus",
    "create_distributed_queue",
    "create_message_broker",
    "task_handler",
    "capability_queue",  # capability routing (runtime/capabilities.py)
    "worker_queues",
    # the Namel3ss event names (runtime/events.py)
    "Event",
    "EventBus",
    "EventDrivenExecutor",
    "EventHandler",
    "EventPriority",
    "EventSubscription",
    "EventType",
    "MemoryEventBus",
    "RedisEventBus",
    "get_event_executor",
    "publish_event",
    "register_event_workflow",
]
