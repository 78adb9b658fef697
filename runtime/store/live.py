"""Reads behind the live event stream (``GET /api/stream``): runs queued since an id, log lines
since an id; plain functions on a sqlite3 connection, each cheap enough to run every second.

Log lines are read two ways, because two indexes answer two questions: a run's own lines
after an id (a client catching up) through ``logs_by_run``, and every new line of a few runs
(the shared tail) by a range of the primary key from the last id seen, so that a tail costs
what was logged since the last poll, not what a run logged in total.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

import orjson


class LogLine(NamedTuple):
    """One stored log line, as the stream sends it."""

    id: int
    run_id: int
    task: str | None  # the label: ``load``, or ``load[3]`` for a mapped instance
    ts: str
    level: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


class NewRun(NamedTuple):
    """A run row seen by the queued-runs poll."""

    id: int
    flow: str
    state: str
    created_at: str


_LOG_COLUMNS = "id, run_id, name, idx, ts, level, message"


def _line(row: sqlite3.Row) -> LogLine:
    name, idx = row["name"], row["idx"]
    label = name if name is None or idx is None or idx < 0 else f"{name}[{idx}]"
    return LogLine(row["id"], row["run_id"], label, row["ts"], row["level"], row["message"])


def last_run_id(conn: sqlite3.Connection) -> int:
    """The highest run id (0 for none): where the queued-runs poll starts."""
    (found,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()
    return int(found)


def runs_after(conn: sqlite3.Connection, after: int, limit: int) -> list[NewRun]:
    """Runs with an id above *after*, oldest first, at most *limit*."""
    return [
        NewRun(row["id"], row["flow"], row["state"], row["created_at"])
        for row in conn.execute(
            "SELECT id, flow, state, created_at FROM runs WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
    ]


def run_state(conn: sqlite3.Connection, run_id: int) -> tuple[str, str] | None:
    """(flow, state) of run *run_id*, ``None`` when there is no such run."""
    row = conn.execute("SELECT flow, state FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else (row["flow"], row["state"])


def last_log_id(conn: sqlite3.Connection) -> int:
    """The highest log line id (0 for none): where a tail starts."""
    (found,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM logs").fetchone()
    return int(found)


def run_lines_between(
    conn: sqlite3.Connection, run_id: int, after: int, upto: int, limit: int
) -> list[LogLine]:
    """Lines of run *run_id* with ``after < id <= upto``, in order, at most *limit* (ask for
    one more than you can take to learn that there were more)."""
    return [
        _line(row)
        for row in conn.execute(
            f"SELECT {_LOG_COLUMNS} FROM logs WHERE run_id = ? AND id > ? AND id <= ? "
            "ORDER BY id LIMIT ?",
            (run_id, after, upto, limit),
        )
    ]


def lines_after(
    conn: sqlite3.Connection, after: int, run_ids: list[int], limit: int
) -> tuple[list[LogLine], int]:
    """New lines of the runs *run_ids*: (lines with an id above *after*, in order, at most
    *limit*; the highest log id when read). Continue from the last line's id when *limit*
    lines came back, else from the highest id."""
    (top,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM logs").fetchone()
    # `+run_id` keeps SQLite off the logs_by_run index: a range of the primary key from
    # *after* reads only the lines written since, however long the runs' logs already are
    rows = conn.execute(
        f"SELECT {_LOG_COLUMNS} FROM logs WHERE id > ? AND id <= ? "
        "AND +run_id IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        (after, top, orjson.dumps(run_ids).decode(), limit),
    ).fetchall()
    return [_line(row) for row in rows], int(top)
