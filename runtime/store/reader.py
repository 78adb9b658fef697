"""Read-only connections to the database, and telling a Sluiceway database from another file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runtime.errors import StoreError
from runtime.store import schema


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection for queries (the CLI uses it without an event loop).

    Opened with ``mode=ro`` and no pragma that writes (no journal mode switch), so a user
    who may only read the file (or its folder) can read the history.

    :raises StoreError: when the file is missing, unreadable or not a Sluiceway database
    """
    if not path.exists():
        raise StoreError(f"{path}: no such database (run a flow first, or pass --db)")
    uri = "file:" + quote(str(path.absolute()))
    conn = _open_reader(path, uri + "?mode=ro")
    try:
        try:
            ours = identify(conn, path)
        except sqlite3.OperationalError as exc:
            # A WAL database in a folder this user cannot write (or a read-only mount), with
            # no -shm file to read: SQLite cannot open it read-only. With no -wal file either,
            # the main file holds every commit: reading it as immutable is exact.
            cannot = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)
            if _code(exc) not in cannot or Path(f"{path}-wal").exists():
                raise
            conn.close()
            conn = _open_reader(path, uri + "?mode=ro&immutable=1")
            ours = identify(conn, path)
        if not ours:
            raise StoreError(f"{path}: not a Sluiceway database (it is empty)")
        for pragma in schema.READER_PRAGMAS:
            conn.execute(pragma)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot read database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _open_reader(path: Path, uri: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(schema.BUSY_TIMEOUT)
    except BaseException:
        conn.close()
        raise
    return conn


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def identify(conn: sqlite3.Connection, path: Path) -> bool:
    """True for a Sluiceway database, False for an empty one (a new file).

    Reads only: a database that is not Sluiceway's is refused before anything is written to
    it (no tables, no switch to WAL).

    :raises StoreError: naming the file, when it has tables but no Sluiceway schema_version
    """
    objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
    tables = {name for kind, name in objects if kind == "table"}
    versions: list[Any] = []
    if "schema_version" in tables:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    if not objects or (tables == {"schema_version"} and len(objects) == 1 and not versions):
        return False  # new (or an older Sluiceway's first migration, interrupted)
    if len(versions) == 1 and schema.FIRST_TABLES <= tables:
        return True
    found = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(
        f"{path}: not a Sluiceway database (it has tables but no Sluiceway schema_version: "
        f"{found or 'no tables'}); refusing to change it: pass another --db"
    )
