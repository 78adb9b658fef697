"""Read queries of the dashboard's pages: the home page's recent squares and what needs
attention, a flow's grid of runs x tasks, a run's alerts and log tail, and log search.

Plain functions on a sqlite3 connection (the API's reader runs them in a thread). Each read
is bounded by an index and a limit, so a page costs the same on a history of 100 runs or of
100,000: the newest runs of a flow come from ``runs_by_flow``, failures from
``runs_by_state``, a run's tasks from the tasks' primary key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from runtime import codec

__all__ = [
    "active_counts",
    "grid_cells",
    "grid_runs",
    "log_page",
    "log_tail",
    "recent_failures",
    "recent_runs",
    "recent_sla_misses",
    "run_alerts",
]

_SQUARE = (
    "SELECT id, flow, state, logical_date, created_at, started_at, ended_at, trigger, "
    "EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id AND e.kind = 'sla.missed') "
    "AS sla_missed FROM runs"
)


def _square(row: sqlite3.Row) -> dict[str, Any]:
    trigger = codec.loads(row["trigger"])
    return {
        "id": row["id"],
        "flow": row["flow"],
        "state": row["state"],
        "logical_date": row["logical_date"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "trigger": trigger.get("kind", "manual") if isinstance(trigger, dict) else "manual",
        "sla_missed": bool(row["sla_missed"]),
    }


def recent_runs(
    conn: sqlite3.Connection, flows: Iterable[str], per_flow: int = 20
) -> dict[str, list[dict[str, Any]]]:
    """The newest *per_flow* runs of each of *flows*, newest first: one search of the
    ``runs_by_flow`` index per flow, however long the history."""
    sql = _SQUARE + " WHERE flow = ? ORDER BY id DESC LIMIT ?"
    return {flow: [_square(row) for row in conn.execute(sql, (flow, per_flow))] for flow in flows}


def active_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per flow, how many runs are queued and running (read from the ``runs_by_state``
    index: the cost grows with the runs in flight, not with the history)."""
    out: dict[str, dict[str, int]] = {}
    for flow, state, count in conn.execute(
        "SELECT flow, state, COUNT(*) FROM runs WHERE state IN ('queued', 'running') "
        "GROUP BY flow, state"
    ):
        out.setdefault(flow, {})[state] = count
    return out


def recent_failures(
    conn: sqlite3.Connection, since: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """Failed runs created at or after *since*, newest first, at most *limit*.

    Walks the ``runs_by_state`` index from the newest failure back and stops at the first
    run created before *since* (run ids grow with creation time), so it reads the day's
    failures, not every failure ever recorded."""
    out: list[dict[str, Any]] = []
    cursor = conn.execute(
        "SELECT id, flow, state, logical_date, created_at, ended_at, error FROM runs "
        "WHERE state = 'failed' ORDER BY id DESC"
    )
    for row in cursor:
        created = codec.parse_iso(row["created_at"])
        if created is None or created < since or len(out) >= limit:
            break
        out.append(dict(row))
    cursor.close()
    return out


def recent_sla_misses(
    conn: sqlite3.Connection, since: datetime, limit: int = 20
) -> list[dict[str, Any]]:
    """SLA misses recorded at or after *since*, newest first, with their run's flow and
    state. Events are read newest first and the walk stops at the first older one."""
    out: list[dict[str, Any]] = []
    cursor = conn.execute(
        "SELECT e.ts, e.run_id, e.task, e.payload, r.flow, r.state FROM events e "
        "JOIN runs r ON r.id = e.run_id WHERE e.kind = 'sla.missed' ORDER BY e.id DESC"
    )
    for row in cursor:
        when = codec.parse_iso(row["ts"])
        if when is None or when < since or len(out) >= limit:
            break
        payload = codec.loads(row["payload"])
        out.append(
            {
                "ts": row["ts"],
                "run_id": row["run_id"],
                "task": row["task"],
                "flow": row["flow"],
                "state": row["state"],
                "deadline": payload.get("deadline") if isinstance(payload, dict) else None,
                "sla": payload.get("sla") if isinstance(payload, dict) else None,
            }
        )
    cursor.close()
    return out


def grid_runs(
    conn: sqlite3.Connection, flow: str, limit: int, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """The newest *limit* runs of *flow* with an id below *before* (all when None), newest
    first, and the cursor of the next (older) page: the last run's id, or None when there
    are no older runs. Keyset pagination: new runs never shift a page."""
    sql = _SQUARE + " WHERE flow = ? AND id < ? ORDER BY id DESC LIMIT ?"
    upper = before if before is not None else 1 << 62
    rows = [_square(row) for row in conn.execute(sql, (flow, upper, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more and rows else None)


def grid_cells(conn: sqlite3.Connection, run_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The task rows of *run_ids*, mapped instances folded per state: one item per (run,
    task, own row or instances, state) with ``count`` and the most ``attempts`` among them.
    ``own`` is True for a task's own row, False for a count of its mapped instances."""
    if not run_ids:
        return []
    marks = ",".join("?" * len(run_ids))
    sql = (
        "SELECT run_id, name, idx < 0 AS own, state, COUNT(*) AS count, "
        "MAX(attempts) AS attempts FROM tasks "
        f"WHERE run_id IN ({marks}) GROUP BY run_id, name, own, state"
    )
    return [
        {
            "run_id": row["run_id"],
            "name": row["name"],
            "own": bool(row["own"]),
            "state": row["state"],
            "count": row["count"],
            "attempts": row["attempts"],
        }
        for row in conn.execute(sql, list(run_ids))
    ]


def run_alerts(conn: sqlite3.Connection, run_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The alerts queued for a run (outbox rows), oldest first: event, destination, what
    became of them. Payloads stay out: they were redacted, but a page has no use for them."""
    return [
        dict(row)
        for row in conn.execute(
            "SELECT id, created_at, event, kind, task, destination, state, attempts, "
            "last_error, delivered_at FROM outbox WHERE run_id = ? ORDER BY id LIMIT ?",
            (run_id, limit),
        )
    ]


_LOG = "SELECT id, run_id, name, idx, attempt, ts, level, message FROM logs"


def _log(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    name, idx = row["name"], row["idx"]
    item["task"] = None if name is None else (name if idx is None or idx < 0 else f"{name}[{idx}]")
    return item


def log_tail(conn: sqlite3.Connection, run_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The newest *limit* log lines of a run, oldest first (as a tail reads)."""
    rows = conn.execute(
        _LOG + " WHERE run_id = ? ORDER BY id DESC LIMIT ?", (run_id, limit)
    ).fetchall()
    return [_log(row) for row in reversed(rows)]


def log_page(
    conn: sqlite3.Connection,
    run_id: int,
    *,
    name: str | None = None,
    idx: int | None = None,
    after: int = 0,
    limit: int = 500,
) -> tuple[list[dict[str, Any]], int | None]:
    """A run's log lines in order from the line after id *after*, optionally of one task
    (*name*, all its instances) or one instance (*name* and *idx*); and the next page's
    cursor (the last line's id, None on the last page)."""
    sql = _LOG + " WHERE run_id = ? AND id > ?"
    args: list[Any] = [run_id, after]
    if name is not None:
        sql += " AND name = ?"
        args.append(name)
    if idx is not None:
        sql += " AND idx = ?"
        args.append(idx)
    rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit + 1)).fetchall()
    more = len(rows) > limit
    lines = [_log(row) for row in rows[:limit]]
    return lines, (lines[-1]["id"] if more and lines else None)
