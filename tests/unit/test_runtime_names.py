"""Every name ``namel3ss_celery.runtime`` exports is there, the Namel3ss event names among them."""

from __future__ import annotations

import namel3ss_celery.runtime as runtime

NAMEL3SS_EVENT_NAMES = {
    "Event",
    "EventType",
    "EventPriority",
    "EventDrivenExecutor",
    "EventBus",
    "MemoryEventBus",
    "RedisEventBus",
    "EventHandler",
    "get_event_executor",
    "publish_event",
    "register_event_workflow",
}


def test_every_exported_name_is_importable() -> None:
    missing = [name for name in runtime.__all__ if not hasattr(runtime, name)]
    assert missing == []
    assert set(runtime.__all__) >= NAMEL3SS_EVENT_NAMES
