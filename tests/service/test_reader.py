"""The API's read connections: requests are answered at once, up to the pool's size, and a
connection is never used by two threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from runtime.service.api.app import Reader
from tests.conftest import MakeRunner


async def test_a_slow_read_does_not_hold_up_the_next(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner():  # the store file exists with its schema
        pass
    reader = Reader(db_path, size=2)
    released = threading.Event()
    used: list[sqlite3.Connection] = []

    def slow(conn: sqlite3.Connection) -> int:
        used.append(conn)
        assert released.wait(10), "the second read never ran beside the first"
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def quick(conn: sqlite3.Connection) -> int:
        used.append(conn)
        released.set()
        return 1

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(reader, slow)
            await anyio.lowlevel.checkpoint()  # slow takes the first connection
            assert await reader(quick) == 1
        assert used[0] is not used[1]
    finally:
        await reader.close()


async def test_reads_beyond_the_pool_wait_for_a_connection(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner():
        pass
    reader = Reader(db_path, size=2)
    busy = 0
    peak = 0
    lock = threading.Lock()
    seen: set[sqlite3.Connection] = set()

    def read(conn: sqlite3.Connection) -> None:
        nonlocal busy, peak
        with lock:
            seen.add(conn)
            busy += 1
            peak = max(peak, busy)
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        threading.Event().wait(0.02)
        with lock:
            busy -= 1

    try:
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(reader, read)
        assert peak == 2
        assert len(seen) == 2  # opened when first needed, then reused
    finally:
        await reader.close()
    for conn in seen:  # closed with the application
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
