"""Row builders for the store's ``put_*`` methods, and a plain sqlite3 peek at the file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.store import Store
from runtime.store.rows import AttemptRow, TaskRow

T0 = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """An ISO timestamp *seconds* after T0, as the engine stores them."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def create_run(
    store: Store, flow: str = "f", key: str | None = None, **kw: Any
) -> tuple[int, bool]:
    """``store.create_run`` with defaults for what the test does not care about."""
    return await store.create_run(
        flow=flow,
        params=kw.pop("params", {}),
        trigger=kw.pop("trigger", {"kind": "manual"}),
        logical_date=kw.pop("logical_date", T0),
        created_at=T0,
        key=key,
        **kw,
    )


async def new_run(store: Store, flow: str = "f", key: str | None = None, **kw: Any) -> int:
    run_id, _ = await create_run(store, flow, key, **kw)
    return run_id


def task_row(
    run_id: int, name: str, state: str, *, idx: int = -1, attempts: int = 1, **kw: Any
) -> TaskRow:
    return TaskRow(
        run_id=run_id,
        name=name,
        idx=idx,
        state=state,
        attempts=attempts,
        started_at=kw.get("started_at", at(0)),
        ended_at=kw.get("ended_at"),
        next_attempt_at=None,
        error=kw.get("error"),
        reason=kw.get("reason"),
        result=kw.get("result"),
        has_result=1 if kw.get("result") is not None else 0,
    )


def attempt_row(
    run_id: int,
    name: str,
    attempt: int,
    state: str,
    *,
    idx: int = -1,
    error: str | None = None,
    interrupted: bool = False,
) -> AttemptRow:
    return AttemptRow(
        run_id=run_id,
        name=name,
        idx=idx,
        attempt=attempt,
        state=state,
        started_at=at(attempt),
        ended_at=at(attempt + 0.5),
        error_type="ValueError" if error else None,
        error_message=error,
        traceback=f"Traceback ...\nValueError: {error}" if error else None,
        interrupted=int(interrupted),
    )


def log_row(run_id: int, name: str, message: str, *, idx: int = -1) -> tuple[Any, ...]:
    return (run_id, name, idx, 1, at(1), "INFO", message)


def peek(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Query the file on a connection of its own: what any other process would see."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
