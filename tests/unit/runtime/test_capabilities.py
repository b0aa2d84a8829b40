"""Capability routing of the distributed queue: queue names, the queues a worker consumes, and refusals."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from namel3ss_celery.errors import InvalidArgument, TaskWaitTimeout
from namel3ss_celery.runtime import (
    DistributedTask,
    TaskStatus,
    capability_queue,
    create_distributed_queue,
    worker_queues,
)
from namel3ss_celery.runtime.capabilities import (
    check_capabilities,
    consumed_capabilities,
    required_capability,
    task_queue,
)


@pytest.mark.parametrize(
    ("queue", "metadata", "routed"),
    [
        ("images", {}, "images"),
        ("images", {"required_capability": None}, "images"),
        ("images", {"required_capability": ""}, "images"),  # empty: no requirement, as in Namel3ss
        ("images", {"required_capability": "gpu"}, "images.cap.gpu"),
        ("celery", {"required_capability": "cuda-12.1"}, "celery.cap.cuda-12.1"),
        ("q", {"required_capability": "zone:eu_west"}, "q.cap.zone:eu_west"),
        ("q", {"other": "gpu"}, "q"),
    ],
)
def test_a_task_goes_to_its_queue_or_its_capability_queue(queue: str, metadata: dict[str, Any], routed: str) -> None:
    assert task_queue(queue, metadata) == routed


@pytest.mark.parametrize(
    ("capabilities", "queues"),
    [
        (set(), ["images"]),
        ({"gpu"}, ["images", "images.cap.gpu"]),
        ({"tpu", "gpu", "avx512"}, ["images", "images.cap.avx512", "images.cap.gpu", "images.cap.tpu"]),
        (["gpu", "gpu"], ["images", "images.cap.gpu"]),
    ],
)
def test_a_worker_consumes_its_queue_and_one_queue_per_capability(capabilities: Any, queues: list[str]) -> None:
    assert worker_queues("images", capabilities) == queues
    assert set(consumed_capabilities("images", queues)) == set(capabilities)


def test_capability_queues_of_other_queues_are_not_a_workers_capabilities() -> None:
    consumed = ["images", "images.cap.gpu", "videos.cap.tpu", "images.cap.", "images.capx"]
    assert list(consumed_capabilities("images", consumed)) == ["gpu"]
    assert capability_queue("images", "gpu") == "images.cap.gpu"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"required_capability": {"gpu", "fp8"}}, r"metadata\['required_capability'\]: a capability is one string"),
        ({"required_capability": ["gpu"]}, r"metadata\['required_capability'\]: a capability is one string"),
        ({"required_capability": 3}, r"metadata\['required_capability'\]: .* not int 3"),
        ({"required_capability": "g p u"}, r"capability 'g p u' cannot name a queue"),
        ({"required_capability": "gpu,tpu"}, r"capability 'gpu,tpu' cannot name a queue"),
        ({"required_capability": "x" * 101}, r"cannot name a queue: use 1 to 100 letters"),
    ],
)
def test_a_required_capability_that_is_not_one_capability_is_refused_by_field(
    metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as refused:
        required_capability(metadata)
    assert refused.value.argument == "metadata['required_capability']"
    with pytest.raises(InvalidArgument):
        task_queue("q", metadata)


@pytest.mark.parametrize(
    ("capabilities", "message"),
    [
        ("gpu", r"capabilities: capabilities are a set of strings, not the string 'gpu'"),
        ({"gpu", ""}, r"capabilities: capability '' cannot name a queue"),
        ({"gpu", None}, r"capabilities: a capability is one string .* not NoneType None"),
        ({"big gpu"}, r"capabilities: capability 'big gpu' cannot name a queue"),
    ],
)
def test_worker_capabilities_that_cannot_name_queues_are_refused(capabilities: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_capabilities(capabilities)
    with pytest.raises(InvalidArgument, match=message):
        worker_queues("q", capabilities)


def test_the_queue_refuses_bad_capabilities_before_publishing_anything() -> None:
    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"unit-{uuid.uuid4().hex[:8]}")
        try:
            with pytest.raises(InvalidArgument, match="^capabilities: "):
                await queue.register_worker("w", "x", {"two words"})
            assert queue.workers == {}
            with pytest.raises(InvalidArgument, match="^required_capability: "):
                await queue.submit_task("x", {}, required_capability="a,b")
            with pytest.raises(InvalidArgument, match=r"^metadata\['required_capability'\]: "):
                task = DistributedTask("t-set", "x", {}, metadata={"required_capability": ["gpu", "fp8"]})
                await queue.broker.publish_task(queue.queue_name, task)
            status = await queue.get_queue_status()
            assert (status["queue_size"], status["pending_tasks"], status["capability_queues"]) == (0, 0, {})
        finally:
            await queue.stop()

    asyncio.run(main())


def test_a_task_whose_capability_no_worker_offers_waits_in_its_queue(caplog: pytest.LogCaptureFixture) -> None:
    """No worker runs here: the task waits, queued, in its capability queue; the plain queue stays empty."""

    async def main() -> None:
        queue = await create_distributed_queue("memory", queue_name=f"unit-{uuid.uuid4().hex[:8]}")
        try:
            await queue.register_worker("w", "plain", set())
            task_id = await queue.submit_task("render", {}, required_capability="gpu")
            assert await queue.get_task_status(task_id) == TaskStatus.QUEUED
            assert queue.pending_tasks[task_id].metadata == {"required_capability": "gpu"}
            status = await queue.get_queue_status()
            assert (status["queue_size"], status["pending_tasks"]) == (0, 1)
            assert status["capability_queues"] == {f"{queue.queue_name}.cap.gpu": 1}
            waits = rf"still queued after waiting 0.05s; it waits in queue '{queue.queue_name}.cap.gpu' for a worker"
            with pytest.raises(TaskWaitTimeout, match=waits):
                await queue.get_task_result(task_id, timeout=0.05)
        finally:
            await queue.stop()

    with caplog.at_level("WARNING", logger="namel3ss_celery"):
        asyncio.run(main())
    assert "requires capability 'gpu', which no worker known here offers: it waits in queue" in caplog.text
