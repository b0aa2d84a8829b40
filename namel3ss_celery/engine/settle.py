"""Settle a block: turn the filed step envelopes into a ``ParallelExecutionResult``.

Pure functions of the block spec and the envelopes; the conductor calls them
when a block's chord body, errback, last step, deadline or cancel settles it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..plan.envelope import Envelope
from ..plan.kinds import Outcome
from ..registry import BUILTIN_REDUCERS, Registry
from ..results import ParallelExecutionResult, ParallelTaskResult, RunStatus, TaskStatus
from ..spec import ParallelBlockSpec, ParallelStrategy, step_key
from .decide import Decision

RACING = (ParallelStrategy.RACE, ParallelStrategy.ANY_SUCCESS)

LOST = "no outcome was recorded for this step (its worker was lost, or its message was refused)"


def task_results(
    block: ParallelBlockSpec,
    envelopes: Mapping[int, str] | Mapping[int, Envelope],
    executed_on: str = "celery",
    decision: Decision | None = None,
    started: Mapping[int, Any] | None = None,
) -> list[ParallelTaskResult]:
    """One ``ParallelTaskResult`` per step of ``block``, in step order, each ``executed_on`` where its block ran.

    Under a ``decision`` a step that has not reported is cancelled: ``not_started``
    when it never began, ``stopping`` while it was asked to stop. Without one it is lost.
    ``envelopes`` are as filed in the store (JSON), or already read (a block run inline).
    """
    results = []
    started = started or {}
    racing = block.strategy in RACING
    winner = decision.winner if decision is not None else None
    for index, step in enumerate(block.steps):
        raw = envelopes.get(index)
        key = step_key(step, index)
        if raw is None:
            metadata: dict[str, Any] = {"executed_on": executed_on, "target": step.target}
            if decision is None:
                results.append(ParallelTaskResult(key, TaskStatus.FAILED, error=LOST, metadata=metadata))
            else:
                pending = Outcome.STOPPING if index in started else Outcome.NOT_STARTED
                metadata["outcome"] = str(pending)
                error = f"{str(pending).replace('_', ' ')}: {decision.reason}"
                results.append(ParallelTaskResult(key, TaskStatus.CANCELLED, error=error, metadata=metadata))
            continue
        env = raw if isinstance(raw, Envelope) else Envelope.decode(raw)
        metadata = {
            "executed_on": env.executed_on or executed_on,
            "target": step.target,
            "worker": env.worker,
            "celery_task_id": env.task_id,
        }
        if env.attempts > 1:
            metadata["attempts"] = env.attempts
        if env.dead_letter:
            metadata["dead_letter"] = env.dead_letter
        outcome = env.outcome
        if winner == index:
            outcome = Outcome.WON
        elif outcome is None and racing:
            outcome = Outcome.RAN_TO_END
        if outcome is not None:
            metadata["outcome"] = str(outcome)
        start, end = env.start, env.end
        duration = round((end - start) * 1000, 3) if start is not None and end is not None else None
        results.append(ParallelTaskResult(key, env.status, env.result, env.error, start, end, duration, metadata))
    return results


def settle_block(
    block: ParallelBlockSpec,
    envelopes: Mapping[int, str] | Mapping[int, Envelope],
    reducers: Registry,
    *,
    executed_on: str = "celery",
    decision: Decision | None = None,
    started: Mapping[int, Any] | None = None,
) -> ParallelExecutionResult:
    """The block's result under its strategy; a strategy's own rule decides ``overall_status``.

    ``executed_on`` (``"celery"`` or ``"local"``) is reported in the block's and each step's ``metadata``.
    A ``decision`` (race winner, fail_fast, deadline, cancel) fixes the status before every step reported.
    """
    results = task_results(block, envelopes, executed_on, decision, started)
    settle = SETTLERS[block.strategy]
    status, final, error = settle(block, results, reducers, decision)
    metadata: dict[str, Any] = {"executed_on": executed_on}
    if decision is not None:
        metadata["decided"] = decision.reason
        if decision.winner is not None:
            metadata["winner"] = results[decision.winner].task_id
    if block.strategy in RACING:
        losers = [r for i, r in enumerate(results) if decision is None or i != decision.winner]
        metadata["loser_worker_seconds"] = round(sum((r.duration_ms or 0.0) for r in losers) / 1000, 3)
    if decision is not None or block.strategy in RACING:
        # Steps still running when the block was decided; the result is rewritten as they report.
        metadata["losers_pending"] = sum(r.metadata.get("outcome") == Outcome.STOPPING for r in results)
    starts = [r.start_time for r in results if r.start_time is not None]
    ends = [r.end_time for r in results if r.end_time is not None]
    start, end = (min(starts), max(ends)) if starts and ends else (None, None)
    return ParallelExecutionResult(
        block_name=block.name,
        strategy=str(block.strategy),
        total_tasks=len(results),
        overall_status=status,
        completed_tasks=sum(r.status == TaskStatus.COMPLETED for r in results),
        failed_tasks=sum(r.status == TaskStatus.FAILED for r in results),
        cancelled_tasks=sum(r.status == TaskStatus.CANCELLED for r in results),
        results=results,
        final_result=final,
        aggregated_output=[r.result for r in results if r.status == TaskStatus.COMPLETED],
        start_time=start,
        end_time=end,
        total_duration_ms=_ms(start, end),
        error_message=error,
        max_concurrent=block.max_concurrency,
        actual_max_concurrent=peak_concurrency(results),
        metadata=metadata,
    )


Settled = tuple[RunStatus, Any, str | None]


def _failures(results: list[ParallelTaskResult]) -> str | None:
    """``2 of 6 steps failed``, ``6 of 6 steps cancelled`` or ``1 of 6 steps failed and 2 cancelled``, then
    each one's error; the counts match ``failed_tasks`` and ``cancelled_tasks``."""
    failed = [r for r in results if r.status == TaskStatus.FAILED]
    cancelled = [r for r in results if r.status not in (TaskStatus.COMPLETED, TaskStatus.FAILED)]
    if not failed and not cancelled:
        return None
    if failed and cancelled:
        counted = f"{len(failed)} of {len(results)} steps failed and {len(cancelled)} cancelled"
    elif failed:
        counted = f"{len(failed)} of {len(results)} steps failed"
    else:
        counted = f"{len(cancelled)} of {len(results)} steps cancelled"
    return f"{counted}: " + "; ".join(f"{r.task_id}: {r.error}" for r in failed + cancelled)


def _settle_all(
    block: ParallelBlockSpec, results: list[ParallelTaskResult], reducers: Registry, decision: Decision | None
) -> Settled:
    error = _failures(results)
    final = {r.task_id: r.result for r in results if r.status == TaskStatus.COMPLETED}
    if decision is not None:
        return decision.status, final, _decided_error(decision, error)
    return (RunStatus.FAILED if error else RunStatus.COMPLETED), final, error


def _settle_collect(
    block: ParallelBlockSpec, results: list[ParallelTaskResult], reducers: Registry, decision: Decision | None
) -> Settled:
    final: dict[str, Any] = {}
    for r in results:
        entry: dict[str, Any] = {"status": str(r.status), "duration_ms": r.duration_ms}
        if r.status == TaskStatus.COMPLETED:
            entry["result"] = r.result
        else:
            entry["error"] = r.error
        final[r.task_id] = entry
    if decision is not None:
        return decision.status, final, decision.reason
    return RunStatus.COMPLETED, final, None


def _settle_map_reduce(
    block: ParallelBlockSpec, results: list[ParallelTaskResult], reducers: Registry, decision: Decision | None
) -> Settled:
    error = _failures(results)
    if decision is not None:
        return decision.status, None, _decided_error(decision, error)
    if error:
        return RunStatus.FAILED, None, error
    name = block.reduce_function or ""
    try:
        function = resolve_reducer(name, reducers)
    except KeyError as exc:
        return RunStatus.FAILED, None, f"{exc.args[0]} (on this worker)"
    try:
        return RunStatus.COMPLETED, function([r.result for r in results]), None
    except Exception as exc:  # noqa: BLE001 - a reducer's failure is the block's failure
        return RunStatus.FAILED, None, f"reducer {name!r} failed: {type(exc).__name__}: {exc}"


def _settle_racing(
    block: ParallelBlockSpec, results: list[ParallelTaskResult], reducers: Registry, decision: Decision | None
) -> Settled:
    """race and any_success: the winner's result; all failed: every error."""
    if decision is None:  # every step reported and none decided: cannot happen, but never hang on it
        decision = Decision(RunStatus.FAILED, None, "no step decided the block")
    if decision.winner is not None:
        winner = results[decision.winner]
        error = None if decision.status == RunStatus.COMPLETED else f"{winner.task_id}: {winner.error}"
        return decision.status, winner.result, error
    return decision.status, None, _decided_error(decision, _failures(results))


def _decided_error(decision: Decision, failures: str | None) -> str | None:
    if decision.status == RunStatus.COMPLETED:
        return failures
    return f"{decision.reason}; {failures}" if failures else decision.reason


def resolve_reducer(name: str, reducers: Registry) -> Callable[[list[Any]], Any]:
    """A built-in reducer, or one registered with ``@reducer``; ``KeyError`` naming the choices otherwise."""
    function = BUILTIN_REDUCERS.get(name) or reducers.reducer(name)
    if function is None:
        raise KeyError(
            f"unknown reducer {name!r}; built in: {', '.join(BUILTIN_REDUCERS)}, or register one with @reducer"
        )
    return function


Settler = Callable[[ParallelBlockSpec, list[ParallelTaskResult], Registry, "Decision | None"], Settled]

SETTLERS: dict[ParallelStrategy, Settler] = {
    ParallelStrategy.ALL: _settle_all,
    ParallelStrategy.COLLECT: _settle_collect,
    ParallelStrategy.MAP_REDUCE: _settle_map_reduce,
    ParallelStrategy.RACE: _settle_racing,
    ParallelStrategy.ANY_SUCCESS: _settle_racing,
}


def peak_concurrency(results: list[ParallelTaskResult]) -> int:
    """Most steps running at one instant, from their start and end times."""
    edges = []
    for r in results:
        if r.start_time is not None and r.end_time is not None:
            edges.append((r.start_time, 1))
            edges.append((r.end_time, -1))
    peak = running = 0
    edges.sort()  # by time, an end (-1) before a start (+1) at the same instant
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start is not None and end is not None else None
