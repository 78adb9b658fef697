"""The run queue's reads on a real SQLite file: their work does not grow with the backlog of
flows that cannot start, and a blocked flow's wait reason shows on each of its queued runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.store import connect_reader, open_store, queries, queue
from runtime.store.rows import RunRow
from tests.store.rows import T0, at, new_run

BLOCKED = ("ghost", "held", "capped")  # not loaded, paused, at max_active_runs


async def _fill(db_path: Path, backlog: int) -> None:
    """*backlog* queued runs of each blocked flow, inserted before 3 queued runs of ``other``
    and 5,000 of ``busy`` (a startable flow with its own long backlog)."""
    async with open_store(db_path):
        pass
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        rows = [(flow, at(0), at(0)) for flow in BLOCKED for _ in range(backlog)]
        rows += [("other", at(1), at(1))] * 3 + [("busy", at(2), at(2))] * 5000
        conn.executemany(
            "INSERT INTO runs (flow, state, logical_date, created_at) VALUES (?, 'queued', ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
def reader(db_path: Path) -> Iterator[Callable[[], sqlite3.Connection]]:
    opened: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        opened.append(connect_reader(db_path))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()


def _steps(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """Run ``fn(conn, *args)`` and count the SQLite virtual machine instructions it took."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        return fn(conn, *args), steps
    finally:
        conn.set_progress_handler(None, 1)


def _queue_pass(conn: sqlite3.Connection) -> tuple[list[str], dict[str, list[int]]]:
    """What the service reads in one pass: the flows with queued runs, then the oldest
    claimable runs of the two flows that can start (``busy`` with 10 free run slots)."""
    names = queue.queued_flows(conn)
    return names, queue.oldest_claimable(conn, {"other": 1000, "busy": 10}, 999)


@pytest.mark.slow
async def test_a_queue_pass_does_the_same_work_with_100000_blocked_runs_as_with_3(
    tmp_path: Path,
) -> None:
    work = {}
    for backlog in (1, 33_334):  # 3 and 100,002 queued runs of the blocked flows
        db = tmp_path / f"queue-{backlog}.db"
        await _fill(db, backlog)
        conn = connect_reader(db)
        try:
            (names, picked), steps = _steps(conn, _queue_pass)
        finally:
            conn.close()
        offset = 3 * backlog
        assert names == ["busy", "capped", "ghost", "held", "other"]
        assert picked == {
            "other": [offset + 1, offset + 2, offset + 3],
            "busy": list(range(offset + 4, offset + 14)),
        }
        work[backlog] = steps
    # the same instructions, give or take a few: a seek is one instruction whatever the depth
    # of the b-tree, and no queued run of a blocked flow is read (each would cost about 10)
    assert work[33_334] <= work[1] + 20, work
    assert work[1] < 1000, work


@pytest.mark.parametrize("statement", ["QUEUED_FLOWS", "OLDEST_OF_FLOW"])
async def test_the_queue_reads_search_the_queued_runs_index(
    db_path: Path, reader: Callable[[], sqlite3.Connection], statement: str
) -> None:
    await _fill(db_path, 100)
    sql = getattr(queue, statement)
    args = () if statement == "QUEUED_FLOWS" else ("other", 0, 1, 10)
    plan = [row[3] for row in reader().execute("EXPLAIN QUERY PLAN " + sql, args)]
    reads_runs = [line for line in plan if " runs " in f"{line} " or " r " in f"{line} "]
    assert reads_runs, plan
    for line in reads_runs:
        assert "INDEX runs_queued" in line, plan
        # a SCAN of the index is the first seek of the loose index scan (ORDER BY ... LIMIT 1)
        assert line.startswith("SEARCH") or statement == "QUEUED_FLOWS", plan


async def test_a_run_queued_by_a_live_process_for_itself_is_skipped(
    db_path: Path, reader: Callable[[], sqlite3.Connection]
) -> None:
    async with open_store(db_path) as store:
        mine = await store.start_epoch(T0)  # this test's process: alive
        own = [await new_run(store, flow="f", epoch=mine) for _ in range(3)]
        free = [await new_run(store, flow="f") for _ in range(2)]
        gone = await store.writer.submit(
            lambda db: db.execute(
                "INSERT INTO epochs (pid, started_at) VALUES (999999999, ?) RETURNING id",
                (at(0),),
            ).fetchone()[0]
        )
        orphan = await new_run(store, flow="f", epoch=gone)
    conn = reader()
    # the service (another epoch) skips the live process's runs, in as many reads as needed
    assert queue.oldest_claimable(conn, {"f": 2}, mine + 100) == {"f": free}
    assert queue.oldest_claimable(conn, {"f": 5}, mine + 100) == {"f": [*free, orphan]}
    assert own == [1, 2, 3]  # the oldest: each pass reads and skips them
    # the service's own epoch marks the runs it claimed; it never leaves one queued
    assert queue.oldest_claimable(conn, {"f": 5}, mine) == {"f": [*free, orphan]}
    assert queue.oldest_claimable(conn, {"nothing": 5}, mine) == {"nothing": []}


async def test_a_flows_wait_reason_shows_on_each_of_its_queued_runs(
    db_path: Path, reader: Callable[[], sqlite3.Connection]
) -> None:
    async with open_store(db_path) as store:
        held = [await new_run(store, flow="held") for _ in range(3)]
        own = await new_run(store, flow="held")
        store.put_run(RunRow(own, "queued", wait_reason="waiting: its own reason"))
        ran = await new_run(store, flow="held")
        store.put_run(RunRow(ran, "running", at(1)))
        other = await new_run(store, flow="other")
        queue.set_wait_reasons(store, {"held": "waiting: flow 'held' is paused", "x": None})
    conn = reader()
    reasons = {run["id"]: run["wait_reason"] for run in queries.list_runs(conn, limit=100)}
    paused = "waiting: flow 'held' is paused"
    assert reasons == {
        **dict.fromkeys(held, paused),
        own: "waiting: its own reason",  # written by the process that owns the run
        ran: None,  # not queued: the flow's reason is not its
        other: None,
    }
    assert queries.get_run(conn, held[-1])["wait_reason"] == paused
    conn.close()

    async with open_store(db_path) as store:
        queue.set_wait_reasons(store, {"held": None})
    assert queries.get_run(reader(), held[0])["wait_reason"] is None
    async with open_store(db_path) as store:
        queue.set_wait_reasons(store, {"other": "waiting: flow 'other' is not loaded"})
        queue.clear_wait_reasons(store)
    assert queries.get_run(reader(), other)["wait_reason"] is None


async def test_runs_of_a_database_before_the_queue_table_are_read_without_it(
    db_path: Path, reader: Callable[[], sqlite3.Connection]
) -> None:
    # a CLI upgraded before the service restarted reads a version 2 file without migrating
    async with open_store(db_path) as store:
        run_id = await new_run(store, flow="f")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TABLE queue_waits")
    conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    assert queries.get_run(reader(), run_id)["wait_reason"] is None
