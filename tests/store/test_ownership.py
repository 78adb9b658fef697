"""Whose file it is: a database that is not Sluiceway's is refused before a byte is written,
a new one is private (0600), a reader opens read-only and writes nothing, and the service's
lock is taken on the file's real path."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import StoreError
from runtime.store import connect_reader, open_store, schema
from runtime.store.lock import DatabaseLock
from tests.store.rows import new_run, peek


def _foreign(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _state(path: Path) -> tuple[str, list[str], list[tuple[str, str]], str]:
    """The file's bytes, the files beside it, its objects and its journal mode."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    beside = sorted(p.name for p in path.parent.iterdir())
    objects = peek(path, "SELECT type, name FROM sqlite_master ORDER BY name")
    mode = peek(path, "PRAGMA journal_mode")[0][0]
    return digest, beside, objects, mode


@pytest.mark.parametrize(
    "statements",
    [
        (
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
            "INSERT INTO notes VALUES (1, 'x')",
        ),
        # another program's own `runs` table: today the first migration fails on it
        ("CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT)",),
        # what that failed attempt left behind: an empty schema_version beside foreign tables
        (
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT)",
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        ),
        # a table named like ours, with a version row, but none of Sluiceway's tables
        (
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
            "INSERT INTO schema_version VALUES (1)",
            "CREATE TABLE migrations (name TEXT)",
        ),
        ("CREATE VIEW v AS SELECT 1 AS one",),
    ],
    ids=["tables", "a-runs-table", "leftover-schema-version", "own-schema-version", "a-view"],
)
async def test_a_database_that_is_not_sluiceways_is_refused_untouched(
    tmp_path: Path, statements: tuple[str, ...]
) -> None:
    path = tmp_path / "other.db"
    _foreign(path, *statements)
    before = _state(path)
    with pytest.raises(StoreError) as info:
        async with open_store(path):
            pytest.fail("opened another program's database")
    text = str(info.value)
    assert text.startswith(f"{path}: not a Sluiceway database")
    assert "refusing to change it" in text
    assert _state(path) == before  # no table, no WAL switch, no file beside it
    assert before[3] == "delete"
    with pytest.raises(StoreError, match="not a Sluiceway database"):
        connect_reader(path)
    assert _state(path) == before


async def test_an_empty_file_and_an_interrupted_first_migration_get_the_schema_only(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    interrupted = tmp_path / "interrupted.db"  # an older Sluiceway stopped before migration 1
    _foreign(interrupted, "CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for path in (empty, interrupted):
        async with open_store(path) as store:
            await new_run(store)
        assert peek(path, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    # one table more than that, and it is someone else's file
    other = tmp_path / "other.db"
    _foreign(
        other,
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY)",
    )
    with pytest.raises(StoreError, match="not a Sluiceway database"):
        async with open_store(other):
            pytest.fail("opened another program's database")
    assert peek(other, "SELECT name FROM sqlite_master ORDER BY name") == [
        ("customers",),
        ("schema_version",),
    ]


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
async def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with open_store(path) as store:
        await new_run(store)
        modes = _modes(tmp_path)
    assert modes == {"new.db": 0o600, "new.db-wal": 0o600, "new.db-shm": 0o600}
    existing = tmp_path / "shared.db"  # a file the admin made group-readable keeps its mode
    existing.touch(mode=0o640)
    existing.chmod(0o640)
    async with open_store(existing):
        pass
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


async def test_a_reader_opens_read_only_and_switches_no_journal_mode(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    async with open_store(path) as store:
        await new_run(store)
    # the same file in rollback-journal mode: a reader must not turn it into WAL
    _foreign(path, "PRAGMA journal_mode=DELETE")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    conn = connect_reader(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.execute("PRAGMA query_only=OFF")  # even so, the open itself is read-only
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM runs")
    finally:
        conn.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert peek(path, "PRAGMA journal_mode") == [("delete",)]


def test_the_lock_is_taken_on_the_real_path(tmp_path: Path) -> None:
    real = tmp_path / "state" / "history.db"
    real.parent.mkdir()
    (tmp_path / "alias").symlink_to(real.parent)
    link = tmp_path / "link.db"
    link.symlink_to(real)
    first = DatabaseLock(real)
    first.acquire()
    try:
        for other in (link, tmp_path / "alias" / "history.db", tmp_path / "state/../link.db"):
            with pytest.raises(StoreError, match=f"pid {os.getpid()}") as info:
                DatabaseLock(other).acquire()
            assert str(info.value).startswith(f"{other}: another sluiceway service")
    finally:
        first.release()
    assert sorted(p.name for p in real.parent.iterdir()) == ["history.db.lock"]
    assert not (tmp_path / "link.db.lock").exists()
    second = DatabaseLock(link)  # free again: through the link now
    second.acquire()
    second.release()
