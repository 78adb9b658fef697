"""Read queries of the JSON API and the dashboard over a long history: the flows' last runs
and counts, and filtered pages of runs by keyset (``id`` below a cursor, never OFFSET).

A filtered page costs about the same with 1,000 runs or 100,000: each (flow, state), state,
(flow, trigger kind), kind or flow asked for is one branch read newest first from its own
index (migration 13) and stopped at the page size, and the branches are merged by id. A
date range becomes an id range first (the smallest and largest id of the runs inside it,
read from the created_at or logical_date index), so a branch never walks runs outside it.
The indexes are named (INDEXED BY): without ANALYZE statistics, which the store never
gathers, SQLite may pick an index that reads the whole history for a page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.store.queries import runs_by_id

LAST_RUNS = 20  # the newest runs of a flow shown with it (the dashboard's squares)
KIND = "json_extract(trigger, '$.kind')"  # exactly the expression of the kind indexes
SPEC_PREFIX = "substr(json_extract(trigger, '$.spec'), 1, ?) = ?"
DATE_FIELDS = {"created_at": "runs_by_created", "logical_date": "runs_by_logical"}
MAX_BRANCHES = 400  # below SQLite's 500 terms of a compound SELECT


@dataclass(frozen=True, slots=True)
class KindTerm:
    """One trigger kind asked for: a kind of ``runs.trigger`` (``schedule``, ``manual``...),
    and for ``cron`` / ``every`` the schedule runs whose spec starts so."""

    kind: str
    spec_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What a page of runs is limited to; an empty tuple means any.

    :ivar since: inclusive lower bound of *date_field*, ISO text to the second without zone
        (``2026-11-01T00:00:00``, UTC): it compares right with every stored width
    :ivar until: exclusive upper bound, the same form
    """

    flows: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    kinds: tuple[KindTerm, ...] = ()
    since: str | None = None
    until: str | None = None
    date_field: str = "created_at"

    def __post_init__(self) -> None:
        # the one value that names a column in the SQL: never anything but these
        if self.date_field not in DATE_FIELDS:
            raise ValueError(f"date_field must be one of {sorted(DATE_FIELDS)}")


@dataclass(slots=True)
class Query:
    """SQL and its parameters, built together."""

    sql: str
    args: list[Any]


def page_of_runs(
    conn: sqlite3.Connection, where: RunFilter, limit: int, before: int | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """The newest *limit* runs matching *where* with an id below *before*, in the ``runs
    --json`` shape, newest first; and whether more runs match after them."""
    bounds = _id_bounds(conn, where)
    if bounds is None:
        return [], False
    low, high = bounds
    if before is not None:
        high = min(high, before - 1)
    if high < low:
        return [], False
    query = _page_query(where, low, high, limit + 1)
    ids = [row[0] for row in conn.execute(query.sql, query.args)]
    return runs_by_id(conn, ids[:limit]), len(ids) > limit


def _id_bounds(conn: sqlite3.Connection, where: RunFilter) -> tuple[int, int] | None:
    """The smallest and largest run id the page may hold; None when nothing can match."""
    if where.since is None and where.until is None:
        return 0, 1 << 62
    column = where.date_field
    index = DATE_FIELDS[column]
    conds: list[str] = []
    args: list[Any] = []
    if where.since is not None:
        conds.append(f"{column} >= ?")
        args.append(where.since)
    if where.until is not None:
        conds.append(f"{column} < ?")
        args.append(where.until)
    low, high = conn.execute(
        f"SELECT MIN(id), MAX(id) FROM runs INDEXED BY {index} WHERE " + " AND ".join(conds), args
    ).fetchone()
    return None if low is None else (int(low), int(high))


def _kind_condition(terms: Sequence[KindTerm]) -> Query:
    parts: list[str] = []
    args: list[Any] = []
    for term in terms:
        if term.spec_prefix is None:
            parts.append(f"{KIND} = ?")
            args.append(term.kind)
        else:
            parts.append(f"({KIND} = ? AND {SPEC_PREFIX})")
            args += [term.kind, len(term.spec_prefix), term.spec_prefix]
    return Query("(" + " OR ".join(parts) + ")", args)


def _residual(where: RunFilter, low: int, high: int, *, flows: bool, states: bool) -> Query:
    """The conditions a branch checks row by row: the id range, the dates, and the filters
    its index does not seek on (*flows* / *states*: those the branch does not cover)."""
    conds: list[str] = ["id BETWEEN ? AND ?"]
    args: list[Any] = [low, high]
    if where.since is not None:
        conds.append(f"{where.date_field} >= ?")
        args.append(where.since)
    if where.until is not None:
        conds.append(f"{where.date_field} < ?")
        args.append(where.until)
    for wanted, column in ((flows and where.flows, "flow"), (states and where.states, "state")):
        if wanted:
            conds.append(f"{column} IN ({','.join('?' * len(wanted))})")
            args += list(wanted)
    return Query(" AND ".join(conds), args)


def _branches(where: RunFilter, low: int, high: int) -> list[Query]:
    """One index seek per combination of the values asked for, each with its residual."""
    flows, states, kinds = where.flows, where.states, where.kinds
    out: list[Query] = []
    if states:  # a state is the most selective (failed, running); by (flow, state) or state
        index = "runs_by_flow_state" if flows else "runs_by_state"
        rest = _residual(where, low, high, flows=False, states=False)
        kind = _kind_condition(kinds) if kinds else None
        for flow in flows or (None,):
            for state in states:
                eq = ("flow = ? AND " if flow is not None else "") + "state = ?"
                args = [flow, state] if flow is not None else [state]
                out.append(_branch(index, eq, args, rest, kind))
        return out
    if kinds:
        index = "runs_by_flow_kind" if flows else "runs_by_kind"
        rest = _residual(where, low, high, flows=False, states=False)
        for flow in flows or (None,):
            for term in kinds:
                eq = ("flow = ? AND " if flow is not None else "") + f"{KIND} = ?"
                args = [flow, term.kind] if flow is not None else [term.kind]
                spec = None
                if term.spec_prefix is not None:
                    spec = Query(SPEC_PREFIX, [len(term.spec_prefix), term.spec_prefix])
                out.append(_branch(index, eq, args, rest, spec))
        return out
    rest = _residual(where, low, high, flows=False, states=False)
    if flows:
        return [_branch("runs_by_flow", "flow = ?", [flow], rest, None) for flow in flows]
    return [_branch(None, "1", [], rest, None)]


def _branch(index: str | None, eq: str, args: list[Any], rest: Query, extra: Query | None) -> Query:
    # NOT INDEXED: the table itself, by rowid (id) range, newest first
    source = f"runs INDEXED BY {index}" if index else "runs NOT INDEXED"
    sql = f"SELECT id FROM {source} WHERE {eq} AND {rest.sql}"
    all_args = [*args, *rest.args]
    if extra is not None:
        sql += f" AND {extra.sql}"
        all_args += extra.args
    return Query(sql + " ORDER BY id DESC LIMIT ?", all_args)


def branch_count(where: RunFilter) -> int:
    """How many index seeks a page of *where* takes (at most :data:`MAX_BRANCHES`)."""
    second = len(where.states) or len(where.kinds) or 1
    return max(1, len(where.flows)) * second


def _page_query(where: RunFilter, low: int, high: int, limit: int) -> Query:
    branches = _branches(where, low, high)
    if len(branches) > MAX_BRANCHES:
        raise ValueError(f"{len(branches)} combinations of filter values; at most {MAX_BRANCHES}")
    if len(branches) == 1:
        (only,) = branches
        return Query(only.sql, [*only.args, limit])
    parts, args = [], []
    for branch in branches:
        parts.append(f"SELECT id FROM ({branch.sql})")
        args += [*branch.args, limit]
    return Query(" UNION ALL ".join(parts) + " ORDER BY id DESC LIMIT ?", [*args, limit])


# --- flows ---


class RunCounts:
    """Runs per flow, counted in full once and then only above the highest id counted, so
    a count costs the runs queued since, not the history (COUNT(*) reads every index entry
    of the flow: 100,000 runs took 6-20 ms). A full recount every *refresh* seconds (of the
    *now* passed in) takes in runs deleted meanwhile (history retention)."""

    def __init__(self, refresh: float = 60.0) -> None:
        self.refresh = refresh
        self._counted: dict[str, tuple[int, int]] = {}  # flow -> (highest id counted, count)
        self._since: float | None = None

    def __call__(
        self, conn: sqlite3.Connection, flows: Sequence[str], now: float
    ) -> dict[str, int]:
        """The number of runs of each of *flows* (called in the reader's thread)."""
        if self._since is None or now - self._since >= self.refresh:
            self._counted.clear()
            self._since = now
        out = {}
        for flow in flows:
            upto, count = self._counted.get(flow, (0, 0))
            more, top = conn.execute(
                "SELECT COUNT(*), MAX(id) FROM runs INDEXED BY runs_by_flow "
                "WHERE flow = ? AND id > ?",
                (flow, upto),
            ).fetchone()
            if top is not None:
                upto, count = int(top), count + int(more)
                self._counted[flow] = (upto, count)
            out[flow] = count
        return out


def flow_stats(
    conn: sqlite3.Connection,
    flows: Sequence[str],
    sla_since: str,
    counts: RunCounts | None = None,
    now: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Per flow of *flows*: ``paused``, ``last_runs`` (the newest :data:`LAST_RUNS` as
    ``{"id", "state", "logical_date", "started_at", "ended_at"}``, newest first), ``runs``
    (count; through *counts* at monotonic time *now* when given, else counted in full),
    ``running`` and ``queued`` counts, and ``sla_misses`` (``sla.missed`` events at or
    after *sla_since*, ISO text)."""
    totals = (counts or RunCounts())(conn, flows, now)
    paused = {row[0]: row[1] for row in conn.execute("SELECT flow, paused_at FROM paused")}
    live: dict[tuple[str, str], int] = {
        (row[0], row[1]): row[2]
        for row in conn.execute(
            "SELECT flow, state, COUNT(*) FROM runs INDEXED BY runs_by_state "
            "WHERE state IN ('running', 'queued') GROUP BY flow, state"
        )
    }
    misses = {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT r.flow, COUNT(*) FROM events e INDEXED BY events_by_kind "
            "JOIN runs r ON r.id = e.run_id WHERE e.kind = 'sla.missed' AND e.ts >= ? "
            "GROUP BY r.flow",
            (sla_since,),
        )
    }
    out: dict[str, dict[str, Any]] = {}
    for flow in flows:
        last = conn.execute(
            "SELECT id, state, logical_date, started_at, ended_at FROM runs "
            "INDEXED BY runs_by_flow WHERE flow = ? ORDER BY id DESC LIMIT ?",
            (flow, LAST_RUNS),
        ).fetchall()
        out[flow] = {
            "paused": flow in paused,
            "paused_at": paused.get(flow),
            "last_runs": [dict(row) for row in last],
            "runs": totals[flow],
            "running": live.get((flow, "running"), 0),
            "queued": live.get((flow, "queued"), 0),
            "sla_misses": misses.get(flow, 0),
        }
    return out
