"""The schedule state reads: every cursor at once, or only the cursors a pass asks for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.define.flow import Flow
from runtime.store import connect_reader, cursors, open_store

AT = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)


def _flow(name: str) -> Flow:
    flow = Flow(name)

    @flow.task
    def work() -> None:
        return None

    return flow


async def _seed(db_path: Path, n: int) -> None:
    async with open_store(db_path) as store:
        firings = [cursors.Firing(_flow(f"f{i}"), "every('1h')", [], AT) for i in range(n)]
        await cursors.fire_batch(store, firings, AT)
        await cursors.set_paused(store, "f3", True, AT)


async def test_read_state_of_reads_only_the_keys_asked_for(db_path: Path) -> None:
    await _seed(db_path, 1000)
    conn = connect_reader(db_path)
    try:
        keys = [(f"f{i}", "every('1h')") for i in (1, 3, 999)] + [("gone", "every('1h')")]
        state = cursors.read_state_of(conn, keys)
        assert state.cursors == dict.fromkeys(keys[:3], AT)  # no row: left out
        assert state.paused == {"f3"}
        everything = cursors.read_state_of(conn, [(f"f{i}", "every('1h')") for i in range(1000)])
        assert everything.cursors == cursors.read_state(conn).cursors  # past one chunk
        assert cursors.read_state_of(conn, []).cursors == {}
    finally:
        conn.close()


async def test_the_keyed_cursor_read_searches_the_primary_key(db_path: Path) -> None:
    # a lookup per key whatever the number of schedules: a scan would make every pass O(N)
    await _seed(db_path, 100)
    conn = connect_reader(db_path)
    try:
        sql = cursors.cursors_of_sql("(?, ?), (?, ?)")
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ("a", "b", "c", "d"))]
    finally:
        conn.close()
    assert any(
        step.startswith("SEARCH s USING") and "(flow=? AND trigger=?)" in step for step in plan
    ), plan
    assert not any(step.startswith("SCAN s") for step in plan), plan


async def test_a_cursor_only_firing_reads_no_flow_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the start-up pass moves the cursor of every new trigger: 10,000 schedules must not
    # mean 10,000 flow files read and hashed for runs that are not made
    flow = _flow("f")
    hashed: list[str] = []

    def source_hash() -> str:
        hashed.append(flow.name)
        return "h"

    monkeypatch.setattr(flow, "source_hash", source_hash)
    async with open_store(db_path) as store:
        await cursors.fire_batch(store, [cursors.Firing(flow, "every('1h')", [], AT)], AT)
        assert hashed == []
        made = await cursors.fire_batch(store, [cursors.Firing(flow, "every('1h')", [AT], AT)], AT)
    assert hashed == ["f"]
    assert len(made[0]) == 1
