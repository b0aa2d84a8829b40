"""The usage examples of the Namel3ss guides on parallel, distributed and event-driven execution, with their
``namel3ss.runtime`` import changed to ``namel3ss_celery.runtime`` and nothing else, unless a comment says so.

Source: the repository namel3ss-Ai/namel3ss-programming-language (commit be3abcdd5e45), files
``docs/implementation/PARALLEL_DISTRIBUTED_EXECUTION_COMPLETE.md``, ``docs/guides/EXAMPLES_AND_USAGE_GUIDE.md``
and ``docs/API_DOCUMENTATION.md``. Copyright (c) 2025 Namel3ss Developers, MIT License.

Each function is one example; the comment above it names its guide and section. Examples the guides write at
top level (``await`` outside a function) are the body of a coroutine here, which returns what the test
checks. The additions every such case needs are marked ``# added:``. An example that is broken on Namel3ss
itself (it fails there too) is copied up to the line that fails; the rest of it is never reached, here or
there. tests/integration/test_namel3ss_guides.py runs them.

Workers load this module (``NAMEL3SS_CELERY_STEP_MODULES``): the step executor ``my_task``, the steps of the
event workflow and the queue handler are found there as on any deployment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from namel3ss_celery import step
from namel3ss_celery.runtime import (
    DistributedTask,
    DistributedTaskQueue,
    EventDrivenExecutor,
    EventType,
    MemoryEventBus,
    MemoryMessageBroker,
    ParallelExecutor,
    RedisMessageBroker,
    create_distributed_executor,
    execute_parallel_steps,
    get_event_executor,
    task_handler,
)
from tests.services import REDIS_URL

# --- docs/implementation/PARALLEL_DISTRIBUTED_EXECUTION_COMPLETE.md, "Usage Examples" ----------------------------


# "Simple Parallel Execution" (from namel3ss.runtime import execute_parallel_steps)
async def my_task(step_data, context):
    # Your task logic here
    return {"result": f"processed_{step_data['id']}"}


async def simple_parallel_execution() -> Any:
    # Execute parallel tasks
    result = await execute_parallel_steps(
        steps=[{"id": 1}, {"id": 2}, {"id": 3}], step_executor=my_task, strategy="all", max_concurrency=5
    )

    print(f"Completed {result.completed_tasks} tasks")
    return result  # added


# "Distributed Execution" (from namel3ss.runtime import create_distributed_executor). Its step executor is
# ``my_task`` of the example above, which reads ``step_data['id']``; these steps carry ``task``.
async def distributed_execution(redis_url: str, steps: list[Any] | None = None) -> Any:
    # Create distributed executor
    executor = await create_distributed_executor(
        broker_type="redis",
        broker_config={"redis_url": redis_url},  # the guide: 'redis://localhost:6379'; here the tests' Redis
    )

    try:  # added: the executor's connections are released (the guide leaves them open)
        # Execute with automatic distribution
        result = await executor.execute_parallel_block(
            parallel_block={
                "name": "distributed_workflow",
                # added: ``steps`` replaces the guide's steps in the corrected run only
                "steps": steps if steps is not None else [{"task": i} for i in range(10)],
                "strategy": "all",
            },
            step_executor=my_task,
        )
    finally:
        await executor.cleanup()
    return result  # added


# "Event-Driven Workflows" (from namel3ss.runtime import get_event_executor, EventType). The workflow's steps
# name their targets by ``type``; Namel3ss ran a placeholder for each, here they are registered steps.
# added: the three steps the workflow names (the smallest each: what it was given).
@step("validate")
def validate(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return {"validated": context["trigger_event"]["data"]["task_id"]}


@step("store")
def store(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return {"stored": context["trigger_event"]["data"]["result"]}


@step("notify")
def notify(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return {"notified": context["trigger_event"]["source"]}


async def event_driven_workflows() -> None:
    executor = await get_event_executor()

    # Register reactive workflow
    await executor.register_workflow_trigger(
        workflow_name="post_processing",
        trigger_event_type=EventType.TASK_COMPLETED,
        workflow_config={"steps": [{"type": "validate"}, {"type": "store"}, {"type": "notify"}]},
    )

    # Trigger workflow
    await executor.publish_event(
        event_type=EventType.TASK_COMPLETED, source="analysis_engine", data={"task_id": "123", "result": "success"}
    )


# --- docs/guides/EXAMPLES_AND_USAGE_GUIDE.md ---------------------------------------------------------------------


# "Quick Start Examples" > "1. Simple Parallel Processing" (from namel3ss.runtime.parallel import ParallelExecutor).
# ``result.execution_time`` is a field of neither ParallelExecutionResult: it fails there, after the block ran.
async def quick_start_parallel(corrected: bool = False) -> Any:
    """Basic parallel processing example."""

    # Initialize executor
    executor = ParallelExecutor(default_max_concurrency=5)

    # Define processing function
    async def process_number(number, context=None):
        await asyncio.sleep(0.1)  # Simulate work
        return number**2

    # Define parallel block
    parallel_block = {
        "name": "square_numbers",
        "strategy": "all",
        "steps": list(range(10)),  # [0, 1, 2, ..., 9]
        "max_concurrency": 3,
    }

    # Execute parallel processing
    result = await executor.execute_parallel_block(parallel_block, process_number)

    if corrected:  # added: the corrected line, the duration the result has
        print(f"Processed {result.completed_tasks} tasks in {result.total_duration_ms / 1000:.2f}s")
    else:
        print(f"Processed {result.completed_tasks} tasks in {result.execution_time:.2f}s")
    squared_numbers = [task.result for task in result.results]
    print(f"Squared numbers: {squared_numbers}")
    return squared_numbers  # added


# "Quick Start Examples" > "2. Basic Distributed Processing" (from namel3ss.runtime.distributed import
# DistributedTaskQueue, MemoryMessageBroker). It starts no worker, so each wait for a result would time out
# (on Namel3ss too); the added lines start one in this process, as the memory broker needs.
# added: the worker's handler.
async def process_data_item(task: DistributedTask) -> dict[str, Any]:
    return {"processed": task.payload["item"]}


async def quick_start_distributed() -> list[Any]:
    """Basic distributed processing example."""

    # Setup components
    broker = MemoryMessageBroker()
    queue = DistributedTaskQueue(broker=broker)

    await queue.start()
    await queue.register_worker("guide-worker", "data_processor", {"data_processing"})  # added
    await queue.start_worker("guide-worker", process_data_item)  # added

    try:
        # Submit tasks
        task_ids = []
        for i in range(5):
            task_id = await queue.submit_task(task_type="data_processing", payload={"item": f"item_{i}"}, priority=1)
            task_ids.append(task_id)
            print(f"Submitted task: {task_id}")

        # Collect results
        results = []
        for task_id in task_ids:
            result = await queue.get_task_result(task_id, timeout=30.0)
            results.append(result)
            print(f"Task {task_id}: {result}")

    finally:
        await queue.stop()
    return results  # added


# "Data Processing Patterns" > "1. Batch Data Processing" (coordinator, parallel, distributed). Broken on
# Namel3ss: DistributedTaskQueue takes no ``worker_timeout`` or ``max_retries`` (TypeError), nor does
# DistributedParallelExecutor take ``parallel_executor`` or ``distributed_queue``. Copied up to the first.
class BatchDataProcessor:
    """High-performance batch data processing system."""

    def __init__(self, redis_url: str = REDIS_URL):  # the guide: "redis://localhost:6379/0"
        # Setup components
        self.broker = RedisMessageBroker(redis_url)
        self.distributed_queue = DistributedTaskQueue(broker=self.broker, worker_timeout=300.0, max_retries=3)
        # (the rest of the example is not reached)


async def batch_processing_example() -> None:
    processor = BatchDataProcessor()
    await processor.start()


# "Data Processing Patterns" > "2. Stream Processing with Windows" (from namel3ss.runtime.events import
# EventDrivenExecutor, MemoryEventBus). Broken on Namel3ss: EventDrivenExecutor takes no
# ``max_concurrent_handlers`` (TypeError); its handlers are registered with ``trigger_event``, which neither has.
class StreamProcessor:
    """Real-time stream processing with windowing."""

    def __init__(self, window_size: float = 60.0, slide_interval: float = 10.0):
        self.window_size = window_size  # seconds
        self.slide_interval = slide_interval  # seconds

        # Setup event system
        self.event_bus = MemoryEventBus()
        self.executor = EventDrivenExecutor(event_bus=self.event_bus, max_concurrent_handlers=100)
        # (the rest of the example is not reached)


async def stream_processing_example() -> None:
    processor = StreamProcessor(window_size=5.0, slide_interval=1.0)
    print(processor)  # the guide goes on with processor.process_stream(generate_data_stream())


# --- docs/API_DOCUMENTATION.md -----------------------------------------------------------------------------------


# "Core API Overview" > "System Architecture": the imports of the four runtime modules this package offers
# (the other two, namel3ss.runtime.security and .observability, are not part of it).
def system_architecture_imports() -> list[Any]:
    from namel3ss_celery.runtime.coordinator import DistributedParallelExecutor
    from namel3ss_celery.runtime.distributed import DistributedTaskQueue
    from namel3ss_celery.runtime.events import EventDrivenExecutor
    from namel3ss_celery.runtime.parallel import ParallelExecutor

    return [ParallelExecutor, DistributedTaskQueue, DistributedParallelExecutor, EventDrivenExecutor]


# "Parallel Execution API" > "execute_parallel_block", the docstring's example.
async def execute_parallel_block_docstring() -> Any:
    executor = ParallelExecutor()  # added: the docstring's ``executor``
    parallel_block = {
        "name": "data_processing",
        "strategy": "all",
        "steps": ["step1", "step2", "step3"],
        "max_concurrency": 5,
        "timeout_seconds": 30.0,
    }

    async def step_executor(step, context=None):
        # Your step implementation
        return f"result_for_{step}"

    result = await executor.execute_parallel_block(parallel_block, step_executor)
    return result  # added


# "Distributed Execution API" > "submit_task", the docstring's example. Broken on Namel3ss: submit_task's
# timeout is ``timeout_seconds`` (TypeError).
async def submit_task_docstring(queue: DistributedTaskQueue) -> None:  # added: the docstring's ``queue``
    task_id = await queue.submit_task(
        task_type="data_analysis", payload={"dataset": "large_dataset.csv"}, priority=2, timeout=600.0
    )
    print(task_id)


# "Distributed Execution API" > "get_task_status", the docstring's example. Broken on Namel3ss: its
# DistributedTaskQueue has no get_task_status (AttributeError); here it gives a TaskStatus, not a dict with
# ``state`` and ``progress`` (TypeError).
async def get_task_status_docstring(queue: DistributedTaskQueue, task_id: str) -> None:  # added: the arguments
    status = await queue.get_task_status(task_id)
    print(f"Status: {status['state']}")
    print(f"Progress: {status['progress']}%")


# "Event-Driven Execution API" > "register_event_handler", the docstring's example. Broken on Namel3ss: the
# filters are ``filters``, not ``filter_conditions`` (TypeError).
async def register_event_handler_docstring(executor: EventDrivenExecutor) -> None:  # added: ``executor``
    async def task_complete_handler(event):
        print(f"Task {event.data['task_id']} completed")

    handler_id = await executor.register_event_handler(
        "task_completed", task_complete_handler, filter_conditions={"priority": "high"}
    )
    print(handler_id)


# "Event-Driven Execution API" > "trigger_event", the docstring's example. Broken on Namel3ss: no such method
# (AttributeError; publish_event(event_type, source, data) is the one).
async def trigger_event_docstring(executor: EventDrivenExecutor) -> None:  # added: ``executor``
    import time

    event_id = await executor.trigger_event(
        "user_action", {"action": "login", "user_id": "123"}, {"source": "web_app", "timestamp": time.time()}
    )
    print(event_id)


# "Event-Driven Execution API" > "start_websocket_server", the docstring's example. Broken on Namel3ss: no
# such method (AttributeError; the executor serves its stream from start() when enable_websocket is set).
async def start_websocket_server_docstring(executor: EventDrivenExecutor) -> None:  # added: ``executor``
    await executor.start_websocket_server(host="0.0.0.0", port=8080, max_connections=5000)


# "Examples & Usage Patterns" > "Basic Parallel Execution" (from namel3ss.runtime.parallel import
# ParallelExecutor, ParallelStrategy).
async def basic_parallel_example() -> Any:
    # Initialize executor
    executor = ParallelExecutor(default_max_concurrency=10)

    # Define step executor
    async def process_item(item, context=None):
        # Simulate processing
        await asyncio.sleep(0.1)
        return f"processed_{item}"

    # Execute parallel block
    parallel_block = {
        "name": "data_processing",
        "strategy": "all",
        "steps": ["item1", "item2", "item3", "item4", "item5"],
        "max_concurrency": 3,
    }

    result = await executor.execute_parallel_block(parallel_block, process_item)

    print(f"Completed {result.completed_tasks} tasks")
    print(f"Results: {[r.result for r in result.results]}")
    return result  # added


# "Examples & Usage Patterns" > "Distributed Task Processing" (from namel3ss.runtime.distributed import
# DistributedTaskQueue, RedisMessageBroker). It starts no worker; the test runs a ``celery worker`` on the
# queue ("default"), which finds this handler by its task type.
# added: the handler of the task type the example submits.
@task_handler("data_analysis")
def analyse_batch(task: DistributedTask) -> dict[str, Any]:
    return {"batch_id": task.payload["batch_id"], "rows": task.payload["data_size"]}


async def distributed_example(redis_url: str) -> list[Any]:
    # Setup message broker
    broker = RedisMessageBroker(redis_url)  # the guide: "redis://localhost:6379/0"; here the tests' Redis

    # Initialize distributed queue
    queue = DistributedTaskQueue(broker=broker)
    await queue.start()

    try:
        # Submit tasks
        task_ids = []
        for i in range(10):
            task_id = await queue.submit_task(
                task_type="data_analysis", payload={"batch_id": i, "data_size": 1000}, priority=1
            )
            task_ids.append(task_id)
            print(f"Submitted task: {task_id}")

        # Wait for results
        results = []
        for task_id in task_ids:
            result = await queue.get_task_result(task_id, timeout=300.0)
            results.append(result)
            print(f"Task {task_id} completed: {result}")

    finally:
        await queue.stop()
    return results  # added


# "Examples & Usage Patterns" > "Event-Driven Processing" (from namel3ss.runtime.events import
# EventDrivenExecutor, MemoryEventBus). Broken on Namel3ss: ``trigger_event`` is no method of its executor
# (AttributeError at the first one). (A single type string there is split into characters, each ``custom``;
# here it is that one type.)
async def event_driven_example() -> None:
    # Initialize event system
    event_bus = MemoryEventBus()
    executor = EventDrivenExecutor(event_bus=event_bus)

    # Register event handlers
    async def task_completed_handler(event):
        print(f"Task completed: {event.data}")

        # Trigger follow-up action
        await executor.trigger_event("task_processed", {"task_id": event.data["task_id"], "status": "processed"})

    async def task_processed_handler(event):
        print(f"Task processed: {event.data}")

    try:  # added: the executor's app is closed (the guide's example fails before it could)
        # Register handlers
        await executor.register_event_handler("task_completed", task_completed_handler)
        await executor.register_event_handler("task_processed", task_processed_handler)

        # Trigger events
        await executor.trigger_event("task_completed", {"task_id": "task_001", "result": "success"})

        # Allow events to process
        await asyncio.sleep(1)
    finally:
        executor.n3.close()
