"""The chaos soak's figures, one per line, and the records of stuck runs (see ``bench.soak_report``)."""

from __future__ import annotations

import argparse
import re
import statistics
from collections import Counter
from pathlib import Path

from bench.soak_cluster import RESTART_SEC
from bench.soak_report import (
    COUNTED_TWICE,
    FINAL,
    KOMBU_KEYS,
    STUCK_SHOWN,
    Ended,
    KeyScan,
    Report,
    failure_reason,
    recovery_times,
)

STUCK_LISTED = 20  # stuck runs listed with their faults


def distribution(values: list[float]) -> str:
    """``n=…, min, median, p90, max`` in seconds."""
    if not values:
        return "n=0"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (
        f"n={len(ordered)}, min {ordered[0]:.2f}, median {statistics.median(ordered):.2f}, "
        f"p90 {p90:.2f}, max {ordered[-1]:.2f}"
    )


def print_report(args: argparse.Namespace, report: Report, logs: Path) -> None:
    """Print every figure, one per line, and the stuck runs' records."""
    ended = report.ended
    statuses = Counter(item.status for item in ended)
    dispatched = sum(1 for item in ended if item.run_id is not None)
    print(
        f"chaos soak: {args.blocks} runs, {args.workers} workers x {args.concurrency}, delivery {args.delivery}, "
        f"seed {args.seed}; dispatched over {report.window:.0f}s, waited until {args.seconds:.0f}s"
    )
    print_faults(report)
    print(f"runs dispatched: {dispatched}{by_label([e for e in ended if e.run_id is not None], None)}")
    if statuses["not dispatched"]:
        print(f"runs not dispatched (every try raised): {statuses['not dispatched']}")
    print(f"completed: {statuses['completed']}")
    print(f"failed: {statuses['failed']}{by_label(ended, 'failed')}")
    reasons = Counter(failure_reason(item.result) for item in ended if item.status == "failed" and item.result)
    for reason, count in reasons.most_common():
        print(f"  {count:5d}  {reason}")
    print_unplanned(report)
    print(f"timeout: {statuses['timeout']}{by_label(ended, 'timeout')}")
    print_timed_out(report)
    print(f"cancelled: {statuses['cancelled']}{by_label(ended, 'cancelled')}")
    others = {status: n for status, n in statuses.items() if status not in (*FINAL, "stuck", "not dispatched")}
    for status, count in sorted(others.items()):
        print(f"{status}: {count}")
    print(f"{'=' * 24} STUCK: {report.stuck_count} {'=' * 24}")
    print_stuck(report)
    print_problems(report)
    print_keys(report.keys)
    print_recovery(report)
    print_dispatch_tries(report)
    print(f"log lines at ERROR or CRITICAL (workers and dispatcher): {sum(report.error_lines.values())}")
    for message, count in report.error_lines.most_common(8):
        print(f"  {count:5d}  {message}")
    if report.stuck_count or args.keep_logs:
        print(f"logs kept in {logs}")


def by_label(ended: list[Ended], status: str | None) -> str:
    """`` (race 2, workflow:fork 1)``: the runs of that status (any: ``None``) by kind; empty when there are none."""
    labels = Counter(item.run.label for item in ended if status is None or item.status == status)
    return f" ({', '.join(f'{label} {n}' for label, n in sorted(labels.items()))})" if labels else ""


def print_unplanned(report: Report) -> None:
    """The failed runs whose errors name an exception besides the planned ones (StepLost, ...), with their faults."""
    planned = {"PlannedFailure", "StepCancelled"}
    shown = 0
    for item in report.ended:
        if item.status != "failed" or item.result is None:
            continue
        names = set(re.findall(r"\b(\w+(?:Error|Lost|Timeout|Exception))\b", item.result.error_message or ""))
        if names - planned and shown < STUCK_SHOWN:
            shown += 1
            print(
                f"    unplanned: run {item.run_id} (#{item.run.seq}, {item.run.label}): {', '.join(sorted(names))}; "
                f"faults: {faults_lived(report, item)}"
            )


def print_timed_out(report: Report) -> None:
    """The runs that ended at a deadline (every step sleeps well under it): the block and the faults they lived
    through, so a deadline that a fault explains (a step lost with its worker, waiting to be filed or
    delivered again) is told from one that nothing explains."""
    timed_out = [item for item in report.ended if item.status == "timeout"][:STUCK_SHOWN]
    for item in timed_out:
        reason = item.result.error_message if item.result is not None else None
        print(
            f"    timed out: run {item.run_id} (#{item.run.seq}, {item.run.label}): {reason or '?'}; "
            f"faults: {faults_lived(report, item)}"
        )


def lived(report: Report, item: Ended) -> list[tuple[float, str]]:
    """(when, what) of each fault during the run (a duplicate only when it copied one of its steps), and exits."""
    end = item.ended_at or float("inf")
    found = [
        (f.at, f.kind)
        for f in report.faults
        if item.dispatched_at < f.at < end and (f.kind != "duplicate" or f.run == item.run_id)
    ]
    found += [(e.at, f"{e.name} exited") for e in report.exits if item.dispatched_at < e.at < end]
    return sorted(found)


def faults_lived(report: Report, item: Ended) -> str:
    """``kill +2.1s, soak4 exited +3.0s``: what the run lived through, from its dispatch."""
    return ", ".join(f"{what} +{at - item.dispatched_at:.1f}s" for at, what in lived(report, item)) or "none"


def print_faults(report: Report) -> None:
    kinds = Counter(f.kind for f in report.faults)
    sources = Counter(f.source for f in report.faults if f.kind == "duplicate")
    downs = [f.detail for f in report.faults if f.kind == "restart"]
    print(
        f"faults: {kinds['kill']} worker kills, {kinds['restart']} Redis restarts, "
        f"{kinds['duplicate']} duplicate deliveries ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))})"
    )
    if downs:
        print(f"  Redis restarts: {'; '.join(downs)}")
    t0 = report.started_at
    timeline = [(f.at, f.kind) for f in report.faults if f.kind != "duplicate"]
    timeline += [(e.at, f"{e.name} exited ({e.code})") for e in report.exits]
    print(f"  timeline: {', '.join(f'+{at - t0:.1f}s {what}' for at, what in sorted(timeline)) or 'nothing'}")
    print(f"workers that exited on their own (started again {RESTART_SEC:g}s later): {len(report.exits)}")
    if report.missed_faults:
        print(f"  faults not done: {dict(sorted(report.missed_faults.items()))}")
    if report.chaos_error is not None:
        print(f"  the chaos thread stopped on an error: {report.chaos_error!r}")


def print_stuck(report: Report) -> None:
    stuck = [item for item in report.ended if item.status == "stuck"]
    by_label = Counter(item.run.label for item in stuck)
    if by_label:
        print(f"  stuck by kind of run: {dict(sorted(by_label.items()))}")
    for item in stuck[:STUCK_LISTED]:
        faults = faults_lived(report, item)
        print(f"  stuck run {item.run_id} (#{item.run.seq}, {item.run.label}); faults after its dispatch: {faults}")
    if len(stuck) > STUCK_LISTED:
        print(f"  ... and {len(stuck) - STUCK_LISTED} more stuck runs")
    for command, record in report.stuck.items():
        print(f"  {command}")
        for name, value in sorted(record.items()):
            print(f"    {name} = {value}")


def print_problems(report: Report) -> None:
    twice = [(i, b, p) for i, b, p in report.problems if p in COUNTED_TWICE]
    print(f"steps counted twice in a result: {len({(i.run.seq, b) for i, b, _ in twice})} blocks")
    for problem, count in Counter(p for _, _, p in report.problems).most_common():
        examples = ", ".join(f"{i.run_id}/{b}" for i, b, p in report.problems if p == problem)[:300]
        print(f"  {count:5d}  {problem}: {examples}")
    print_duplicates(report)
    for phase in ("started", "ended"):
        keys = report.repeats.get(phase, [])
        print(
            f"step bodies {phase} more than once for one attempt (probe counts): {len(keys)}{attributed(report, keys)}"
        )
        if keys:
            print(f"  tokens (r<run>[node].<step>:<attempt>): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")


def print_duplicates(report: Report) -> None:
    """How many injected duplicates ran their step's body again (its probe counted twice), by where they came from."""
    copies = [(f.source or "?", f.step.probe) for f in report.faults if f.kind == "duplicate" and f.step is not None]
    started, ended = set(report.repeats.get("started", [])), set(report.repeats.get("ended", []))
    parts = []
    for source in sorted({source for source, _ in copies}):
        probes = [probe for s, probe in copies if s == source]
        again = sum(1 for probe in probes if probe in started)
        to_end = sum(1 for probe in probes if probe in ended)
        parts.append(f"{source}: {again} started again, {to_end} ran to the end again, of {len(probes)}")
    print(f"duplicate deliveries whose step body ran twice: {'; '.join(parts) or 'none injected'}")


def attributed(report: Report, tokens: list[str]) -> str:
    """`` (their runs saw: duplicate 3, kill 1)``: the faults the runs of ``tokens`` lived through, by kind."""
    if not tokens:
        return ""
    by_seq = {item.run.seq: item for item in report.ended}
    seen: Counter[str] = Counter()
    for token in tokens:
        seq = re.match(r"r(\d+)", token)
        item = by_seq.get(int(seq.group(1))) if seq else None
        if item is not None:
            kinds = {"worker exit" if what.endswith("exited") else what for _, what in lived(report, item)}
            seen.update(kinds or {"no fault"})
    return f" (their runs saw: {', '.join(f'{kind} {n}' for kind, n in sorted(seen.items()))})"


def print_keys(keys: KeyScan) -> None:
    print(f"keys left without a TTL: {sum(keys.without_ttl.values())} (of {sum(keys.counted.values())} keys counted)")
    for pattern, count in keys.without_ttl.most_common():
        print(f"  {count:5d}  {pattern}")
    counted = ", ".join(f"{p} ({n})" for p, n in sorted(keys.counted.items()))
    print(f"  counted, by pattern: {counted or 'none'}")
    kombu = ", ".join(f"{p!r} ({n})" for p, n in sorted(keys.kombu.items()))
    print(f"  left out as kombu's: {kombu or 'none'} (rules: {'; '.join(KOMBU_KEYS)})")


def print_recovery(report: Report) -> None:
    times = recovery_times(report.ended, report.faults)
    print(
        f"recovery s (last fault lived through -> run end), kill or restart: {distribution(times['kill or restart'])}"
    )
    for kind in ("kill", "restart", "duplicate"):
        print(f"  after a {kind}: {distribution(times[kind])}")


def print_dispatch_tries(report: Report) -> None:
    tries = report.failed_tries
    if not tries:
        print("dispatch tries that raised: 0")
        return
    errors = Counter(error.split(":", 1)[0] for error, _ in tries.values())
    states = Counter(state for _, state in tries.values())
    print(f"dispatch tries that raised: {len(tries)} ({dict(errors)}); their run records now: {dict(states)}")
