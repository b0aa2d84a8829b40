"""Starting a checked run: its record in the coordination store, then its first blocks' steps, published
from here for a small run, or one launch message a worker acts on."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kombu.exceptions import OperationalError

from ..engine.conductor import Conductor
from ..engine.leases import launch_lease
from ..engine.ports import CoordinationStore
from ..plan import fields
from ..plan.model import Plan
from ..registry import LAUNCH_TASK
from ..results import RunStatus
from ..routing.consumers import node_queues
from ..routing.queues import adapter_queue
from . import SMALL_BLOCK

logger = logging.getLogger("namel3ss_celery")


def start_run(
    app: Any,
    store: CoordinationStore,
    conductor: Conductor,
    plan: Plan,
    initial: dict[str, Any],
    run_id: str,
    ttl: int,
    recorded: Callable[[bool], None],
    broker: str = "",
    first_event: str = "",
) -> None:
    """Record run ``run_id`` of ``plan`` with context ``initial`` (and ``broker``, the broker it goes through:
    ``apps.broker_identity``; and ``first_event``, its ``workflow_started`` stream entry, in the same write
    where the store keeps the stream), tell ``recorded`` (whether the store wrote ``first_event``), then
    start it.

    A small run (its first blocks have at most ``SMALL_BLOCK`` steps) is published here: its few steps cost
    less than a hop through a worker. Any other sends one small launch message, so a web request never
    waits for thousands of steps; when the broker refuses it, the roots are published from here instead.
    """
    record = {
        fields.KIND: plan.kind,
        fields.NAME: plan.name,
        fields.PLAN: plan.to_json(),
        fields.CONTEXT: json.dumps(initial),
        fields.QUEUES: json.dumps(node_queues(app, plan)),
        fields.STATUS: str(RunStatus.RUNNING),
        fields.CREATED: repr(time.time()),
    } | ({fields.BROKER: broker} if broker else {})
    roots = [n for n in plan.nodes if not n.depends_on]
    if sum(len(n.block.steps) for n in roots) <= SMALL_BLOCK and not any(n.block.fan_out for n in roots):
        # Nobody else knows the run yet, so its roots are claimed (and not cancelled) as the record is written,
        # with their leases: should this process die while publishing them, a worker's watchdog finishes it.
        record.update({fields.launched(n.name): "1" for n in roots})
        leases = [launch_lease(n.name) for n in roots]
        recorded(store.create_run(run_id, record, ttl, leases=leases, first_event=first_event))
        conductor.launch(run_id, plan, roots, record, {}, cancelled={n.name: None for n in roots})
    else:
        recorded(store.create_run(run_id, record, ttl, first_event=first_event))
        queue = adapter_queue(roots[0].block, plan.pools)  # pool workers take it where nobody else runs
        try:
            app.signature(LAUNCH_TASK, args=(run_id,)).apply_async(
                ignore_result=True, **({"queue": queue} if queue else {})
            )
        except (OperationalError, *app.connection_for_write().connection_errors):
            # The broker went away since check_broker: publish the roots from here, as for a small run; if
            # that fails too, they end failed, naming the error. The run never waits for a lost launch.
            logger.exception("publishing the launch of run %s failed; launching it from here", run_id)
            # Claimed, as the launch would: a launch message the broker took after all finds them claimed.
            claimed = [n for n in roots if store.claim(run_id, fields.launched(n.name), lease=launch_lease(n.name))]
            record.update({fields.launched(n.name): "1" for n in claimed})
            conductor.launch(run_id, plan, claimed, record, {})
