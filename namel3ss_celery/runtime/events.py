"""``namel3ss.runtime.events`` here: the Namel3ss event runtime's names, exported by ``namel3ss_celery.runtime``
(``create_reactive_workflow_example`` only from here, as in Namel3ss).

``get_event_executor()`` gives the process's ``EventDrivenExecutor`` (on the Celery app the environment
configures: ``CELERY_BROKER_URL``, else the embedded default); ``EventDrivenExecutor(event_bus=
RedisEventBus(url))`` one on that Redis. See ``events.executor`` for what each call does here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..events.buses import EventBus, EventHandler, MemoryEventBus, RedisEventBus
from ..events.executor import EventDrivenExecutor as _EventDrivenExecutor
from ..events.model import Event, EventPriority, EventType
from ..extension import Namel3ssCelery
from ..settings import Settings

__all__ = [
    "Event",
    "EventBus",
    "EventDrivenExecutor",
    "EventHandler",
    "EventPriority",
    "EventSubscription",
    "EventType",
    "MemoryEventBus",
    "RedisEventBus",
    "create_reactive_workflow_example",
    "get_event_executor",
    "publish_event",
    "register_event_workflow",
]


def _n3_for(bus: EventBus) -> Namel3ssCelery:
    """The app a bus means: its Redis for everything, or the environment's (the embedded default when unset)."""
    environment = Settings.from_env()
    if isinstance(bus, RedisEventBus):
        settings = Settings(
            broker_url=bus.redis_url,
            result_backend=bus.redis_url,
            step_modules=environment.step_modules,
            program=environment.program,
        )
        return Namel3ssCelery(settings=settings)
    return Namel3ssCelery(settings=environment)


@dataclass
class EventSubscription:
    """A subscription to event types (the Namel3ss record, with its fields and defaults; the buses here
    identify a subscription by the id ``register_event_handler`` returns)."""

    subscription_id: str
    subscriber_id: str
    event_types: set[EventType]
    filters: dict[str, Any] = field(default_factory=dict)
    delivery_mode: str = "async"
    active: bool = True
    created_at: float = field(default_factory=time.time)


class EventDrivenExecutor(_EventDrivenExecutor):
    __doc__ = _EventDrivenExecutor.__doc__

    def __init__(
        self,
        event_bus: EventBus | None = None,
        enable_websocket: bool = True,
        websocket_host: str = "localhost",
        websocket_port: int = 8765,
        *,
        n3: Any = None,
    ) -> None:
        bus = event_bus or MemoryEventBus()
        super().__init__(bus, enable_websocket, websocket_host, websocket_port, n3=n3 or bus.n3 or _n3_for(bus))


_executor: EventDrivenExecutor | None = None


async def get_event_executor() -> EventDrivenExecutor:
    """The process's event executor, started on first use."""
    global _executor
    if _executor is None:
        _executor = EventDrivenExecutor()
        await _executor.start()
    return _executor


async def publish_event(event_type: EventType | str, source: str, data: dict[str, Any], **kwargs: Any) -> str:
    """Publish an event with the process's executor; its id."""
    return await (await get_event_executor()).publish_event(event_type, source, data, **kwargs)


async def register_event_workflow(
    workflow_name: str, trigger_event_type: EventType | str, workflow_config: dict[str, Any], **kwargs: Any
) -> None:
    """Register an event-triggered workflow with the process's executor."""
    await (await get_event_executor()).register_workflow_trigger(
        workflow_name, trigger_event_type, workflow_config, **kwargs
    )


EXAMPLE_WORKFLOW = "post_processing_pipeline"
EXAMPLE_STEPS = ("validate_result", "store_result", "notify_completion")


def example_step(step: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A step of the example workflow: what it was given (its type and data, the names in its context) and
    when it ran, as the Namel3ss runtime's default step executor reports it."""
    return {
        "step_type": step.get("type", step.get("target", "unknown")),
        "step_data": step.get("data", {}),
        "context_keys": list(context),
        "executed_at": time.time(),
    }


async def create_reactive_workflow_example() -> None:
    """The Namel3ss example of a reactive workflow, on the process's event executor.

    Registers the workflow ``post_processing_pipeline`` (steps of type ``validate_result``,
    ``store_result`` and ``notify_completion``, strategy ``all``, at most 3 at once) for ``task_completed``
    events whose ``task_type`` is ``analysis``, then publishes one from ``analysis_engine``: the workflow runs,
    and its end is announced as a ``workflow_completed`` event with ``workflow_name``
    ``post_processing_pipeline``. Each step reports what it was given (``example_step``). The three step
    names are registered for it on the executor's installation, unless registered already: they run on the
    workers of this process (the embedded default); a deployment's own workers need them registered there
    (a step module with ``@step("validate_result")``, ...).
    """
    executor = await get_event_executor()
    for name in EXAMPLE_STEPS:
        if executor.n3.registry.step(name) is None:
            executor.n3.step(name)(example_step)
    await executor.register_workflow_trigger(
        workflow_name=EXAMPLE_WORKFLOW,
        trigger_event_type=EventType.TASK_COMPLETED,
        workflow_config={
            "steps": [{"type": name, "data": {}} for name in EXAMPLE_STEPS],
            "strategy": "all",
            "max_concurrency": 3,
        },
        filters={"task_type": "analysis"},
    )
    await executor.publish_event(
        event_type=EventType.TASK_COMPLETED,
        source="analysis_engine",
        data={
            "task_type": "analysis",
            "task_id": "analysis_123",
            "result": {"status": "success", "data": "processed_output"},
        },
    )
