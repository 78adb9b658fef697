"""The run queue in the store: which flows have queued runs, the oldest runs of a flow the
service may claim, and why a flow's queued runs wait.

Every read here is bounded by the number of flows with queued runs and the number of runs
picked, never by the length of a flow's backlog: both reads go through the partial index
``runs_queued`` (``runs(flow, id) WHERE state = 'queued'``), and the flow names are found with
one index seek per flow (a loose index scan), so 100,000 queued runs of a paused flow cost the
same as one.

A flow that cannot start runs (paused, at ``max_active_runs``, not loaded) waits as a whole:
its reason is one row of ``queue_waits``, shown for each of its queued runs by the read
queries (a run's own ``wait_reason``, written by the process that owns it, comes first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.store import Store

# The flows with queued runs, each found by one seek in runs_queued: the first flow above the
# previous one. A plain SELECT DISTINCT would read every queued run. INDEXED BY: without
# ANALYZE statistics the planner prefers runs_by_state (state = ?), which reads every queued
# run for each seek; if the index could not be used the statement would fail, not scan.
QUEUED_FLOWS = """
WITH RECURSIVE queued(flow) AS (
    SELECT (SELECT flow FROM runs INDEXED BY runs_queued WHERE state = 'queued'
            ORDER BY flow LIMIT 1)
    UNION ALL
    SELECT (SELECT flow FROM runs INDEXED BY runs_queued WHERE state = 'queued'
            AND flow > queued.flow ORDER BY flow LIMIT 1)
    FROM queued WHERE queued.flow IS NOT NULL
)
SELECT flow FROM queued WHERE flow IS NOT NULL
"""

# The oldest queued runs of one flow from *after_id* on, with their owner's epoch (a queued
# run without an epoch was queued for the service; one with the epoch of another live process
# is that process's own, see oldest_claimable)
OLDEST_OF_FLOW = """
SELECT r.id, e.pid, e.boot_id, e.proc_start, e.stopped_at FROM runs r INDEXED BY runs_queued
LEFT JOIN epochs e ON e.id = r.epoch
WHERE r.state = 'queued' AND r.flow = ? AND r.id > ? AND (r.epoch IS NULL OR r.epoch != ?)
ORDER BY r.id LIMIT ?
"""


def queued_flows(conn: sqlite3.Connection) -> list[str]:
    """The names of the flows that have queued runs, sorted."""
    return [row[0] for row in conn.execute(QUEUED_FLOWS)]


def oldest_claimable(
    conn: sqlite3.Connection, wanted: Mapping[str, int], epoch: int
) -> dict[str, list[int]]:
    """For each flow of *wanted*, the ids of its oldest queued runs the service may claim, at
    most ``wanted[flow]`` of them, oldest first.

    Runs queued for the service (no epoch) and runs left queued by a process that is gone
    may be claimed; a run a live ``sluiceway run`` queued for itself (waiting for its
    ``max_active_runs``) is skipped, and so costs one row read.
    """
    from runtime.store.lock import process_alive

    alive: dict[tuple[int, str, str], bool] = {}
    out: dict[str, list[int]] = {}
    for flow, count in wanted.items():
        picked: list[int] = []
        after = 0
        while len(picked) < count:
            asked = count - len(picked)
            rows = conn.execute(OLDEST_OF_FLOW, (flow, after, epoch, asked)).fetchall()
            for run_id, pid, boot_id, proc_start, stopped_at in rows:
                after = run_id
                if pid is not None and stopped_at is None:
                    ident = (pid, boot_id, proc_start)
                    if ident not in alive:
                        alive[ident] = process_alive(*ident)
                    if alive[ident]:
                        continue
                picked.append(run_id)
            if len(rows) < asked:  # no more queued runs of this flow
                break
        out[flow] = picked
    return out


def set_wait_reasons(store: Store, reasons: Mapping[str, str | None]) -> None:
    """Record why the queued runs of each flow wait; ``None`` clears a flow's reason (queued:
    written with the next batch)."""
    upsert = [(flow, reason) for flow, reason in reasons.items() if reason is not None]
    clear = [(flow,) for flow, reason in reasons.items() if reason is None]

    def op(db: sqlite3.Connection) -> None:
        if upsert:
            db.executemany(
                "INSERT INTO queue_waits (flow, reason) VALUES (?, ?) "
                "ON CONFLICT (flow) DO UPDATE SET reason = excluded.reason",
                upsert,
            )
        if clear:
            db.executemany("DELETE FROM queue_waits WHERE flow = ?", clear)

    if upsert or clear:
        store.writer.put_op(op)


def clear_wait_reasons(store: Store) -> None:
    """Forget every flow's wait reason: a service starting or stopping decides them anew."""

    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM queue_waits")

    store.writer.put_op(op)
