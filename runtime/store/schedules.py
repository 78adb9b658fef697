"""Schedule state in the store: scheduled runs with their cursors, and paused flows.

Writes are writer ops (one transaction each, committed before they return); reads are plain
functions on a sqlite3 connection, for ``await store.read(fn)`` or the CLI's reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import aiosqlite

from runtime import codec

if TYPE_CHECKING:
    from runtime.flow import Flow
    from runtime.store import Store

__all__ = [
    "Firing",
    "ScheduleState",
    "cursors",
    "fire_batch",
    "fire_scheduled",
    "paused_flows",
    "read_state",
    "run_key",
    "set_paused",
]

# No RETURNING: executemany cannot return rows. Ids are read back afterwards (see _fire_op).
_INSERT_RUN = """
INSERT INTO runs (flow, state, params, trigger, logical_date, idempotency_key, retry_of,
                  source_hash, created_at)
VALUES (?, 'queued', ?, ?, ?, ?, NULL, ?, ?)
ON CONFLICT DO NOTHING
"""

# A cursor only moves forward: a slower scheduler racing this one, or a wall clock stepped
# back, must not make an instant due twice. julianday() compares the ISO text as time (as text,
# "…:00.5Z" sorts before "…:00Z").
_UPSERT_CURSOR = """
INSERT INTO schedules (flow, trigger, cursor, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (flow, trigger) DO UPDATE SET cursor = excluded.cursor,
    updated_at = excluded.updated_at
WHERE julianday(excluded.cursor) > julianday(schedules.cursor)
"""


@dataclass(frozen=True, slots=True)
class Firing:
    """One trigger's share of a tick: runs to create and where its cursor moves.

    :ivar flow: the flow (its params and source hash go into each run)
    :ivar trigger_key: ``str(spec)``, e.g. ``"cron('0 2 * * *', tz='Europe/Amsterdam')"``
    :ivar instants: the scheduled instants to create runs for (aware), oldest first
    :ivar cursor: the newest instant dealt with (fired or skipped), stored for the next tick
    """

    flow: Flow
    trigger_key: str
    instants: Sequence[datetime]
    cursor: datetime


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the tick loop reads each pass.

    :ivar cursors: the stored cursor per (flow, trigger key), aware UTC
    :ivar paused: names of the paused flows
    """

    cursors: dict[tuple[str, str], datetime] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)


def run_key(trigger_key: str, instant: datetime) -> str:
    """The idempotency key of the scheduled run of *trigger_key* at *instant*."""
    return f"schedule:{trigger_key}:{codec.iso(instant)}"


async def fire_scheduled(
    store: Store,
    *,
    flow: Flow,
    trigger_key: str,
    instants: Sequence[datetime],
    cursor: datetime,
    now: datetime,
) -> list[int]:
    """Create the queued runs of one trigger's *instants* and store its *cursor*, in one
    transaction; return the ids of the runs created.

    An instant that already has its run (a restart, a reload, a racing scheduler) is skipped
    by the unique (flow, idempotency key) index. A flow that is paused when the transaction
    runs gets no runs and its cursor stays.

    :raises StoreError: when the write fails (nothing of it is committed)
    """
    made = await fire_batch(store, [Firing(flow, trigger_key, instants, cursor)], now)
    return made[0]


async def fire_batch(store: Store, firings: Sequence[Firing], now: datetime) -> list[list[int]]:
    """:func:`fire_scheduled` for many triggers in one writer op (one transaction, a handful of
    statements however many flows fire); returns the created run ids per firing, in order."""
    if not firings:
        return []

    async def op(db: aiosqlite.Connection) -> list[list[int]]:
        return await _fire_op(db, firings, now)

    result: list[list[int]] = await store.writer.submit(op)
    return result


async def _fire_op(
    db: aiosqlite.Connection, firings: Sequence[Firing], now: datetime
) -> list[list[int]]:
    async with db.execute("SELECT flow FROM paused") as cur:
        paused = {row[0] for row in await cur.fetchall()}
    live = [i for i, f in enumerate(firings) if f.flow.name not in paused]
    created = codec.iso(now)
    rows, slot = [], {}
    for i in live:
        firing = firings[i]
        params = codec.dumps_str(firing.flow.params)
        source_hash = firing.flow.source_hash()
        for instant in firing.instants:
            scheduled = codec.iso(instant)
            key = run_key(firing.trigger_key, instant)
            trigger = {"kind": "schedule", "spec": firing.trigger_key, "scheduled": scheduled}
            rows.append(
                (
                    firing.flow.name,
                    params,
                    codec.dumps_str(trigger),
                    scheduled,
                    key,
                    source_hash,
                    created,
                )
            )
            slot[(firing.flow.name, key)] = i
    made: list[list[int]] = [[] for _ in firings]
    if rows:
        async with db.execute("SELECT COALESCE(MAX(id), 0) FROM runs") as cur:
            got = await cur.fetchone()
        before = int(got[0]) if got else 0
        await db.executemany(_INSERT_RUN, rows)
        # The writer's transaction holds the write lock and runs its ops one at a time, so
        # every id above `before` is a row this op inserted; the conflicts made none.
        async with db.execute(
            "SELECT id, flow, idempotency_key FROM runs WHERE id > ? ORDER BY id", (before,)
        ) as cur:
            for run_id, flow, key in await cur.fetchall():
                made[slot[(flow, key)]].append(int(run_id))
    cursors = [
        (firings[i].flow.name, firings[i].trigger_key, codec.iso(firings[i].cursor), created)
        for i in live
    ]
    if cursors:
        await db.executemany(_UPSERT_CURSOR, cursors)
    return made


async def set_paused(store: Store, flow: str, paused: bool, now: datetime) -> bool:
    """Pause or unpause *flow*; return False when it already was in that state.

    A paused flow creates no scheduled runs and its cursors stay where they are, so on unpause
    its catch-up policy decides what the missed instants do.
    """

    async def op(db: aiosqlite.Connection) -> bool:
        if paused:
            cur = await db.execute(
                "INSERT INTO paused (flow, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (flow, codec.iso(now)),
            )
        else:
            cur = await db.execute("DELETE FROM paused WHERE flow = ?", (flow,))
        async with cur:
            return cur.rowcount > 0

    changed: bool = await store.writer.submit(op)
    return changed


# --- reads ---


def _has_schedule_tables(conn: sqlite3.Connection) -> bool:
    # a database from before schema version 2 (read without migrating, e.g. serve --dry-run)
    row = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('schedules', 'paused')"
    ).fetchone()
    return bool(row[0] == 2)


def cursors(conn: sqlite3.Connection) -> dict[tuple[str, str], datetime]:
    """The stored cursor of every (flow, trigger key), as aware UTC datetimes."""
    if not _has_schedule_tables(conn):
        return {}
    out: dict[tuple[str, str], datetime] = {}
    for flow, trigger, cursor in conn.execute("SELECT flow, trigger, cursor FROM schedules"):
        moment = codec.parse_iso(cursor)
        assert moment is not None
        out[(flow, trigger)] = moment
    return out


def paused_flows(conn: sqlite3.Connection) -> set[str]:
    """Names of the paused flows."""
    if not _has_schedule_tables(conn):
        return set()
    return {row[0] for row in conn.execute("SELECT flow FROM paused")}


def read_state(conn: sqlite3.Connection) -> ScheduleState:
    """Cursors and paused flows in one read."""
    return ScheduleState(cursors(conn), paused_flows(conn))
