"""Django: dispatch a workflow when the current database transaction commits.

A view that saves a row and dispatches a workflow reading that row must not
publish before the row is committed: a fast worker would look for it and miss
it, and a rolled-back request would still start a run. ``dispatch_on_commit``
checks the spec in the view (bad input raises there, before anything commits),
reserves the run's id, and publishes in ``transaction.on_commit``::

    from django.db import transaction
    from namel3ss_celery.integrations.django import dispatch_on_commit
    from proj.celery import n3

    def create_report(request):
        with transaction.atomic():
            report = Report.objects.create(title=request.POST["title"])
            run = dispatch_on_commit(n3, "workflows/report.yaml", context={"report_id": report.pk})
        return JsonResponse({"run": run.id})

Settings come from Django's: ``CELERY_*`` through Celery's
``config_from_object("django.conf:settings", namespace="CELERY")``, and
namel3ss-celery's own in ``NAMEL3SS_CELERY = {"step_modules": [...], ...}``.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction  # type: ignore[import-untyped]  # Django ships no types: Any from here

from ..compiler.checks import check_context
from ..errors import ConfigurationError, UnknownRun
from ..extension import Namel3ssCelery, SpecSource
from ..plan.model import Plan
from ..runs import DEFAULT_WAIT, RunHandle, RunResult
from ..worker.compat import on_commit_pending

__all__ = ["Publication", "PendingRun", "dispatch_on_commit"]


class Publication(str, enum.Enum):
    """Where a run dispatched on commit stands."""

    PENDING = "pending"  # its transaction has not committed yet
    PUBLISHED = "published"  # committed and published: a worker runs it
    DISCARDED = "discarded"  # its transaction (or savepoint) rolled back: never published
    FAILED = "failed"  # committed, but publishing raised (``PendingRun.error``)


class PendingRun(RunHandle):
    """The handle of a run that is published when its transaction commits.

    Its ``id`` is known at once (store it with the row). Once published it is
    an ordinary ``RunHandle``: ``get``, ``aget``, ``status``, ``cancel``, and
    ``n3.run(id)`` from any process. Before that the run is unknown to every
    process (``status()`` raises ``UnknownRun``), and a rolled-back run stays
    unknown for good. ``publication`` says which, read in any thread.
    """

    def __init__(
        self, n3: Namel3ssCelery, run_id: str, plan: Plan, context: dict[str, Any], connection: Any, using: Any = None
    ) -> None:
        super().__init__(lambda: n3.store, n3.conductor.cancel, run_id)
        self._n3 = n3
        self._using = using
        self._plan = plan
        self._context = context
        self._connection = connection
        self._lock = threading.Lock()
        self._state = Publication.PENDING
        self._publishing = False
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<PendingRun {self.id} {self.publication.value}>"

    @property
    def publication(self) -> Publication:
        """``pending`` until the transaction ends; then ``published``, ``discarded`` or ``failed``."""
        with self._lock:
            if self._state is Publication.PENDING and not self._publishing and not self._queued():
                return Publication.DISCARDED  # Django dropped the callback: a rollback
            return self._state

    @property
    def published(self) -> bool:
        """True once the run was published."""
        return self.publication is Publication.PUBLISHED

    def get(self, timeout: float = DEFAULT_WAIT) -> RunResult:
        """Wait for the run to end and return its result (see ``RunHandle.get``).

        Waiting in the thread whose transaction is still open cannot succeed:
        the run is published only after that transaction commits.

        Raises:
            UnknownRun: the transaction rolled back, or publishing failed: there is no run.
            ConfigurationError: called in the thread whose transaction must commit first (at once,
                rather than after ``timeout``).
            WaitTimeout: the run did not end within ``timeout`` seconds.
        """
        publication = self.publication
        if publication in (Publication.DISCARDED, Publication.FAILED):
            raise UnknownRun(self.id)
        if publication is Publication.PENDING and self._connection is transaction.get_connection(self._using):
            raise ConfigurationError(
                f"run {self.id} is published when this thread's transaction commits: wait for it after the "
                "atomic block ends",
                setting="dispatch_on_commit",
            )
        return super().get(timeout)

    def _queued(self) -> bool:
        return on_commit_pending(self._connection, self._publish)

    def _publish(self) -> None:
        with self._lock:
            self._publishing = True
        try:
            self._n3.publish(self._plan, self._context, run_id=self.id)
        except BaseException as exc:
            with self._lock:
                self._state, self.error, self._publishing = Publication.FAILED, exc, False
            raise  # Django raises it from the commit, or logs it when robust
        with self._lock:
            self._state, self._publishing = Publication.PUBLISHED, False


def dispatch_on_commit(
    n3: Namel3ssCelery,
    spec: SpecSource,
    context: Mapping[str, Any] | None = None,
    *,
    workflow: str | None = None,
    using: str | None = None,
    robust: bool = False,
) -> PendingRun:
    """``n3.dispatch(spec, context)`` once the current transaction of ``using`` commits.

    The spec and context are checked now, so bad input raises in the view,
    before anything commits; what is published is that checked copy. The run's
    id is reserved now; nothing is published until the commit, and nothing ever
    when the transaction (or the savepoint this was called in) rolls back.
    Outside an atomic block (autocommit) the run is published at once, as
    Django runs ``on_commit`` callbacks. In a ``django.test.TestCase`` the
    commit never happens: use ``captureOnCommitCallbacks(execute=True)``.

    Args:
        n3: namel3ss-celery installed on the project's Celery app.
        spec: a ``ParallelBlockSpec``, ``WorkflowSpec``, ``ProgramSpec``, a mapping or a file path.
        context: JSON data every step receives as its ``context``.
        workflow: which workflow of a program to run, when it has several.
        using: the database alias whose transaction decides (Django's default when ``None``).
        robust: passed to ``on_commit``: a publishing error is logged instead of raised
            from the commit (the handle then says ``failed`` and keeps the ``error``).

    Returns:
        The run's handle, ``PendingRun``; ``run.id`` is final.

    Raises:
        SpecError: the spec or the context is invalid (nothing will be published).
        CompileError: a target is unknown or a field is not supported (nothing will be published).
    """
    plan = n3.plan(spec, workflow)
    checked = check_context(context)
    run = PendingRun(n3, uuid.uuid4().hex, plan, checked, transaction.get_connection(using), using)
    transaction.on_commit(run._publish, using=using, robust=robust)
    return run


def emit_on_commit(
    n3: Namel3ssCelery,
    event_type: str,
    data: Mapping[str, Any] | None = None,
    *,
    source: str = "application",
    correlation_id: str | None = None,
    using: str | None = None,
    robust: bool = False,
) -> str:
    """``n3.emit(...)`` once the current transaction of ``using`` commits: a trigger never starts on a row
    that was rolled back. The event is checked now (a bad type or data raises in the view) and published
    as it was checked; outside an atomic block, at once, as Django runs ``on_commit`` callbacks.

    Returns:
        The event's id (final now; nothing is published before the commit, nothing ever on a rollback).

    Raises:
        SpecError: an unknown event type, or data that is not a mapping of JSON data.
    """
    event = n3.events.event(event_type, data, source=source, correlation_id=correlation_id)
    transaction.on_commit(lambda: n3.events.publish(event), using=using, robust=robust)
    return event.event_id
