"""The run list's queries read by index, never the whole history: every branch of every
filter is an index SEARCH (migration 13), checked with EXPLAIN QUERY PLAN on a store that,
like the service's, has no ANALYZE statistics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runtime.store import open_store
from runtime.store.browse import KindTerm, RunCounts, RunFilter, _page_query

FILTERS = {
    "none": RunFilter(),
    "flow": RunFilter(flows=("a", "b")),
    "state": RunFilter(states=("failed", "cancelled")),
    "flow-state": RunFilter(flows=("a",), states=("failed",)),
    "kind": RunFilter(kinds=(KindTerm("manual"), KindTerm("schedule", "cron("))),
    "flow-kind": RunFilter(flows=("a", "b"), kinds=(KindTerm("backfill"),)),
    "all": RunFilter(flows=("a",), states=("succeeded",), kinds=(KindTerm("event"),)),
    "dates": RunFilter(since="2025-01-01T00:00:00", until="2025-02-01T00:00:00"),
    "logical": RunFilter(
        states=("failed",), since="2025-01-01T00:00:00", date_field="logical_date"
    ),
}


@pytest.mark.parametrize("where", FILTERS.values(), ids=FILTERS.keys())
async def test_every_branch_of_a_page_searches_an_index(db_path: Path, where: RunFilter) -> None:
    async with open_store(db_path):
        pass
    query = _page_query(where, 1, 10**9, 51)
    conn = sqlite3.connect(db_path)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query.sql, query.args)]
        conn.execute(query.sql, query.args).fetchall()  # and it runs
    finally:
        conn.close()
    reads = [step for step in plan if " runs " in f" {step} "]
    assert reads, plan
    for step in reads:
        assert step.startswith("SEARCH runs USING"), plan
        assert "id>? AND id<?" in step or "rowid>? AND rowid<?" in step, plan


async def test_run_counts_add_new_runs_and_take_in_deletions_at_the_refresh(
    db_path: Path,
) -> None:
    async with open_store(db_path):
        pass
    conn = sqlite3.connect(db_path, isolation_level=None)
    insert = (
        "INSERT INTO runs (flow, state, logical_date, created_at) "
        "VALUES (?, 'succeeded', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')"
    )
    try:
        conn.executemany(insert, [("a",)] * 5 + [("b",)] * 2)
        counts = RunCounts(refresh=60)
        assert counts(conn, ["a", "b", "c"], now=0.0) == {"a": 5, "b": 2, "c": 0}
        conn.executemany(insert, [("a",)] * 3 + [("c",)])
        assert counts(conn, ["a", "b", "c"], now=1.0) == {"a": 8, "b": 2, "c": 1}
        conn.execute("DELETE FROM runs WHERE flow = 'a' AND id < 3")
        # runs only deleted are seen at the next full count, not before
        assert counts(conn, ["a"], now=59.0) == {"a": 8}
        assert counts(conn, ["a"], now=60.0) == {"a": 6}
    finally:
        conn.close()


def test_a_filter_names_no_column_but_the_two_dates() -> None:
    with pytest.raises(ValueError, match="date_field"):
        RunFilter(since="2025-01-01T00:00:00", date_field="created_at; DROP TABLE runs")
