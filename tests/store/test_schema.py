"""Opening the store: pragmas on every connection, the version table, refusing what it cannot
read."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import StoreError
from runtime.store import connect_reader, migrations, open_store, queries, schema
from tests.store.rows import attempt_row, new_run, peek

EXPECTED = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}


def _pragmas_sync(conn: sqlite3.Connection) -> dict[str, Any]:
    out = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in EXPECTED}
    out["busy_timeout"] = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    return out


async def test_writer_connection_has_the_pragmas(db_path: Path) -> None:
    def read(db: sqlite3.Connection) -> dict[str, Any]:
        return {
            name: db.execute(f"PRAGMA {name}").fetchone()[0] for name in (*EXPECTED, "busy_timeout")
        }

    async with open_store(db_path) as store:
        got = await store.writer.submit(read)  # runs on the writer's own connection
    assert {k: got[k] for k in EXPECTED} == EXPECTED
    assert got["busy_timeout"] > 0


async def test_fresh_reader_has_the_pragmas(db_path: Path) -> None:
    async with open_store(db_path):
        pass
    conn = connect_reader(db_path)
    try:
        got = _pragmas_sync(conn)
        query_only = conn.execute("PRAGMA query_only").fetchone()[0]
    finally:
        conn.close()
    assert {k: got[k] for k in EXPECTED} == EXPECTED
    assert got["busy_timeout"] > 0
    assert query_only == 1


async def test_new_file_gets_the_current_schema_version(db_path: Path) -> None:
    async with open_store(db_path):
        pass
    assert peek(db_path, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    tables = {r[0] for r in peek(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"flows", "runs", "tasks", "attempts", "logs", "events"} <= tables


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_reopening_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    # a handler on the store's own logger: the CLI's logging setup may stop propagation
    store_log = logging.getLogger("sluiceway.runtime.store")
    lines, level = _Lines(), store_log.level
    store_log.addHandler(lines)
    store_log.setLevel(logging.INFO)
    try:
        async with open_store(db_path) as store:
            run_id = await new_run(store)
        first, lines.lines = lines.lines, []
        async with open_store(db_path) as store:
            again = await new_run(store)
        second = lines.lines
    finally:
        store_log.removeHandler(lines)
        store_log.setLevel(level)
    assert [line for line in first if "migrated" in line] == [
        f"store={db_path} migrated to schema version {n}"
        for n in range(1, schema.SCHEMA_VERSION + 1)
    ]
    assert [line for line in second if "migrated" in line] == []
    assert again == run_id + 1
    assert peek(db_path, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]


async def test_newer_schema_version_is_refused(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await new_run(store)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (schema.SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError) as info:
        async with open_store(db_path):
            pytest.fail("a newer database was opened")
    text = str(info.value)
    assert str(db_path) in text
    assert f"schema version {schema.SCHEMA_VERSION + 1} is newer" in text
    assert "upgrade" in text
    # refused untouched: the version and the data are as they were
    assert peek(db_path, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION + 1,)]
    assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(1,)]


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the pages you are looking for\n" * 100)
    with pytest.raises(StoreError, match=r"notes\.db"):
        async with open_store(path):
            pytest.fail("opened a text file as a database")
    with pytest.raises(StoreError, match=r"notes\.db"):
        connect_reader(path)


def test_reader_refuses_a_database_that_is_not_sluiceways(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a Sluiceway database"):
        connect_reader(path)


async def test_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        async with open_store(tmp_path / "nope" / "s.db"):
            pytest.fail("opened a file in a missing folder")


def test_reader_on_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such database"):
        connect_reader(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # looking did not create it


def _database_at_version(path: Path, version: int) -> None:
    """A file as a Sluiceway of schema *version* left it (the migrations it had, no more)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);\n"
            + "".join(migrations.MIGRATIONS[:version])
            + f"\nINSERT INTO schema_version (version) VALUES ({version});"
        )
    finally:
        conn.close()


async def test_migration_5_flags_the_attempts_older_versions_recorded_as_interrupted(
    db_path: Path,
) -> None:
    _database_at_version(db_path, 4)
    attempts = [
        ("stopped", 1, "failed", "InterruptedRunError", "interrupted by service shutdown"),
        ("crashed", 1, "failed", "InterruptedRunError", "interrupted by service restart"),
        ("failed", 1, "failed", "ValueError", "interrupted by service shutdown"),
        ("own", 1, "failed", "InterruptedRunError", "the task's own error"),
        ("ok", 1, "succeeded", None, None),
    ]
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO runs (id, flow, state, logical_date, created_at) "
                "VALUES (1, 'f', 'running', 'x', 'x')"
            )
            conn.executemany(
                "INSERT INTO attempts (run_id, name, idx, attempt, state, error_type, "
                "error_message) VALUES (1, ?, -1, ?, ?, ?, ?)",
                attempts,
            )
    finally:
        conn.close()
    async with open_store(db_path) as store:
        flagged = await store.read(queries.interrupted_tasks, 1)
    assert peek(db_path, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    rows = peek(db_path, "SELECT name, interrupted FROM attempts ORDER BY name")
    assert rows == [("crashed", 1), ("failed", 0), ("ok", 0), ("own", 0), ("stopped", 1)]
    assert flagged == {("crashed", -1), ("stopped", -1)}


async def test_only_the_newest_attempt_counts_as_interrupted(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
        store.put_attempt(attempt_row(run_id, "again", 1, "failed", interrupted=True))
        store.put_attempt(attempt_row(run_id, "again", 2, "failed", error="no"))
        store.put_attempt(attempt_row(run_id, "load", 1, "failed", idx=3, interrupted=True))
        flagged = await store.read(queries.interrupted_tasks, run_id)
    assert flagged == {("load", 3)}
