"""Retention: deleting runs that ended before a cutoff, with every row that belongs to them,
in bounded chunks so the writer never holds up the engine for long.

What goes with a run: its tasks, attempts, log lines (and their full-text index entries,
by trigger), events, checks, and its delivered, dead or digested alerts. Alerts of no run
(``service.started``, digests) go when they are done with and older than the cutoff. What stays: a file
claim (its path, size and mtime keep the same content from running twice) loses its run,
unless its file was moved or deleted, then it goes; a newer run that retried a pruned one
keeps its trigger (``{"kind": "retry", "run_id"}``) but loses ``retry_of``. Upstream cursors
(``on_flow``) are run-id bounds, not references: nothing there changes.

Never pruned: a run that has not ended, one a queued or running retry still reuses results
of, and one whose file claim is not settled yet.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel

from runtime import codec
from runtime.store import Store

CHUNK = 50  # runs in the first writer transaction; then sized to take about TARGET
MAX_CHUNK = 500
TARGET = 0.05  # seconds one chunk may hold the writer (measured: bench/log_search.py)
FINAL_ALERTS = "('delivered', 'dead', 'grouped')"

# a run that ended before the cutoff and nothing still needs
_PRUNABLE = """
state IN ('succeeded', 'failed', 'cancelled') AND ended_at IS NOT NULL
AND julianday(ended_at) < julianday(?)
AND NOT EXISTS (SELECT 1 FROM runs q WHERE q.retry_of = runs.id
                AND q.state NOT IN ('succeeded', 'failed', 'cancelled'))
AND NOT EXISTS (SELECT 1 FROM file_claims c WHERE c.run_id = runs.id AND c.settled_at IS NULL)
"""

# (table, how the rows of runs (?...) are counted and deleted)
_OWNED = (
    ("tasks", "FROM tasks WHERE run_id IN ({ids})"),
    ("attempts", "FROM attempts WHERE run_id IN ({ids})"),
    ("logs", "FROM logs WHERE run_id IN ({ids})"),
    ("events", "FROM events WHERE run_id IN ({ids})"),
    ("checks", "FROM checks WHERE run_id IN ({ids})"),
    ("alerts", f"FROM outbox WHERE run_id IN ({{ids}}) AND state IN {FINAL_ALERTS}"),
    ("file_claims", "FROM file_claims WHERE run_id IN ({ids}) AND outcome IN ('moved', 'deleted')"),
)


@dataclass(slots=True)
class Pruned:
    """How many rows a prune deleted (or, dry, would delete), by kind."""

    runs: int = 0
    tasks: int = 0
    attempts: int = 0
    logs: int = 0
    events: int = 0
    checks: int = 0
    alerts: int = 0
    file_claims: int = 0

    def add(self, other: Pruned) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        """``3 runs (12 tasks, 14 attempts, 300 log lines, ...)``; ``no runs``."""
        if not self.runs:
            return "no runs"
        what = {"logs": "log lines", "file_claims": "file claims"}
        parts = [
            f"{getattr(self, f.name)} {what.get(f.name, f.name)}"
            for f in fields(self)
            if f.name != "runs" and getattr(self, f.name)
        ]
        return f"{self.runs} run{'s' * (self.runs != 1)}" + (
            f" ({', '.join(parts)})" if parts else ""
        )


# alerts of no run (service.started, trigger.error, digests) that are done with, by age
_RUNLESS_ALERTS = (
    f"FROM outbox WHERE id IN (SELECT id FROM outbox WHERE run_id IS NULL AND state IN "
    f"{FINAL_ALERTS} AND julianday(created_at) < julianday(?) LIMIT ?)"
)


# --- reads ---


def prunable_runs(conn: sqlite3.Connection, cutoff: str, limit: int, after: int = 0) -> list[int]:
    """Ids of up to *limit* runs above id *after* that may be pruned at *cutoff* (ISO)."""
    return [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM runs WHERE id > ? AND {_PRUNABLE} ORDER BY id LIMIT ?",
            (after, cutoff, limit),
        )
    ]


def count_owned(conn: sqlite3.Connection, run_ids: Sequence[int]) -> Pruned:
    """How many rows pruning *run_ids* deletes (what a dry run reports)."""
    marks = ",".join("?" * len(run_ids))
    counted = Pruned(runs=len(run_ids))
    for name, rows in _OWNED:
        (n,) = conn.execute("SELECT count(*) " + rows.format(ids=marks), run_ids).fetchone()
        setattr(counted, name, n)
    return counted


def count_prunable(conn: sqlite3.Connection, cutoff: str, chunk: int = 2000) -> Pruned:
    """What pruning at *cutoff* would delete, nothing written."""
    total = Pruned()
    after = 0
    while ids := prunable_runs(conn, cutoff, chunk, after):
        total.add(count_owned(conn, ids))
        after = ids[-1]
    (runless,) = conn.execute("SELECT count(*) " + _RUNLESS_ALERTS, (cutoff, -1)).fetchone()
    total.alerts += runless
    return total


# --- writes ---


def _delete_chunk(db: sqlite3.Connection, run_ids: Sequence[int], cutoff: str) -> Pruned:
    """Prune the runs among *run_ids* that still may be (checked again in this transaction:
    a retry may have been queued since they were read)."""
    marks = ",".join("?" * len(run_ids))
    ids = [
        row[0]
        for row in db.execute(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND {_PRUNABLE}", (*run_ids, cutoff)
        )
    ]
    if not ids:
        return Pruned()
    marks = ",".join("?" * len(ids))
    done = Pruned(runs=len(ids))
    for name, rows in _OWNED:
        setattr(done, name, db.execute("DELETE " + rows.format(ids=marks), ids).rowcount)
    db.execute(f"UPDATE file_claims SET run_id = NULL WHERE run_id IN ({marks})", ids)
    db.execute(f"UPDATE runs SET retry_of = NULL WHERE retry_of IN ({marks})", ids)
    db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
    return done


async def prune_history(store: Store, before: datetime, *, chunk: int = CHUNK) -> Pruned:
    """Delete the runs that ended before *before* (and nothing still needs), with their
    rows, a chunk of runs per writer transaction, each sized from the last one's time to
    hold the writer about :data:`TARGET` seconds; between two, the engine's batches go.

    :raises StoreError: when a chunk cannot be committed (the chunks before it are)
    """
    cutoff = codec.iso(before)
    assert cutoff is not None
    total = Pruned()
    after = 0
    while True:
        ids = await store.read(prunable_runs, cutoff, chunk, after, flush=False)
        if not ids:
            total.alerts += await _prune_runless_alerts(store, cutoff)
            return total
        took: list[float] = []

        def op(db: sqlite3.Connection, ids: list[int] = ids, took: list[float] = took) -> Pruned:
            started = time.perf_counter()
            try:
                return _delete_chunk(db, ids, cutoff)
            finally:
                took.append(time.perf_counter() - started)

        done: Pruned = await store.writer.submit(op)
        total.add(done)
        after = ids[-1]
        chunk = _next_chunk(chunk, took[0] if took else TARGET)
        await anyio.lowlevel.checkpoint()


async def _prune_runless_alerts(store: Store, cutoff: str, chunk: int = 1000) -> int:
    """Delete the delivered, dead and digested alerts of no run created before *cutoff*,
    *chunk* per transaction; how many."""
    deleted = 0
    while True:

        def op(db: sqlite3.Connection) -> int:
            return int(db.execute("DELETE " + _RUNLESS_ALERTS, (cutoff, chunk)).rowcount)

        done: int = await store.writer.submit(op)
        deleted += done
        if done < chunk:
            return deleted
        await anyio.lowlevel.checkpoint()


def _next_chunk(chunk: int, took: float) -> int:
    """The next chunk's size from this one's *took* seconds: toward :data:`TARGET`, at most
    doubling or halving at a time."""
    wanted = chunk * TARGET / max(took, 1e-6)
    return max(1, min(MAX_CHUNK, round(min(max(wanted, chunk / 2), chunk * 2))))


def report(pruned: Pruned, before: datetime) -> dict[str, Any]:
    """The JSON of a prune: the cutoff and the counts."""
    return {"before": codec.iso(before), **pruned.as_dict()}
