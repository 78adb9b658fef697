"""The dashboard's login sessions in SQLite: the writer's ops that add and drop them, and the
read of the live ones when the API starts (runtime/service/api/sessions.py keeps them in
memory after that)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["add_session", "drop_expired", "drop_session", "live_sessions"]

Op = Callable[[sqlite3.Connection], None]


def add_session(id_hash: str, user: str, created_at: float, expires_at: float) -> Op:
    """The op that records one session (``store.writer.submit`` it: committed before the
    cookie is handed out)."""

    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT OR REPLACE INTO sessions (id_hash, user, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (id_hash, user, created_at, expires_at),
        )

    return op


def drop_session(id_hash: str) -> Op:
    """The op that forgets one session (logout, or evicted for room)."""

    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    return op


def drop_expired(now: float) -> Op:
    """The op that deletes every session expired at *now* (unix seconds)."""

    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))

    return op


def live_sessions(conn: sqlite3.Connection, now: float) -> list[tuple[str, str, float, float]]:
    """(id_hash, user, created_at, expires_at) of every session alive at *now*, oldest
    first."""
    rows = conn.execute(
        "SELECT id_hash, user, created_at, expires_at FROM sessions WHERE expires_at > ?"
        " ORDER BY created_at",
        (now,),
    ).fetchall()
    return [(str(a), str(b), float(c), float(d)) for a, b, c, d in rows]
