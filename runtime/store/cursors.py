"""Schedule state in the store: scheduled runs with their cursors, and paused flows.

Writes are writer ops (one transaction each, committed before they return); reads are plain
functions on a sqlite3 connection, for ``await store.read(fn)`` or the CLI's reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from runtime import codec

if TYPE_CHECKING:
    from runtime.define.flow import Flow
    from runtime.store import Store

__all__ = [
    "Firing",
    "ScheduleState",
    "cursors",
    "fire_batch",
    "fire_scheduled",
    "paused_flows",
    "read_state",
    "read_state_of",
    "run_key",
    "set_paused",
]

# No RETURNING: executemany cannot return rows. Ids are read back afterwards (see fire_batch).
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


def run_key(instant: datetime) -> str:
    """The idempotency key of the scheduled run at *instant*: ``schedule:2026-01-10T10:00:00Z``.

    A scheduled run's identity is (flow, instant), not the trigger — the unique index is on
    (flow, key) — so two triggers of one flow that fire at the same instant make one run, and
    backfill (which makes the same key) never repeats a scheduled instant."""
    return _key(codec.iso(instant) or "")


def _key(scheduled: str) -> str:
    return f"schedule:{scheduled}"


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
    created = codec.iso(now)
    # rows are built here, on the caller's time: the writer's transaction stays short
    rows: list[list[tuple[str | None, ...]]] = []
    for firing in firings:
        flow = firing.flow
        own: list[tuple[str | None, ...]] = []
        rows.append(own)
        if not firing.instants:
            continue  # a cursor move only (a new trigger, skipped instants): no run row
        params, source_hash = codec.encode_str(flow.params), flow.source_hash()
        for instant in firing.instants:
            scheduled = codec.iso(instant) or ""
            trigger = {"kind": "schedule", "spec": firing.trigger_key, "scheduled": scheduled}
            key = _key(scheduled)
            own.append(
                (flow.name, params, codec.dumps_str(trigger), scheduled, key, source_hash, created)
            )
    cursors = [(f.flow.name, f.trigger_key, codec.iso(f.cursor), created) for f in firings]

    def op(db: sqlite3.Connection) -> list[list[int]]:
        paused = {row[0] for row in db.execute("SELECT flow FROM paused")}
        # a flow paused since it was planned gets no runs, and its cursor stays
        live = [i for i, f in enumerate(firings) if f.flow.name not in paused]
        made: list[list[int]] = [[] for _ in firings]
        inserts = [row for i in live for row in rows[i]]
        if inserts:
            slot = {(row[0], row[4]): i for i in live for row in rows[i]}
            got = db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()
            before = int(got[0]) if got else 0
            db.executemany(_INSERT_RUN, inserts)
            # The writer's transaction holds the write lock and runs its ops one at a time, so
            # every id above `before` is a row this op inserted; conflicts inserted none.
            for run_id, flow, key in db.execute(
                "SELECT id, flow, idempotency_key FROM runs WHERE id > ? ORDER BY id", (before,)
            ):
                made[slot[(flow, key)]].append(int(run_id))
        if live:
            db.executemany(_UPSERT_CURSOR, [cursors[i] for i in live])
        return made

    result: list[list[int]] = await store.writer.submit(op)
    return result


async def set_paused(store: Store, flow: str, paused: bool, now: datetime) -> bool:
    """Pause or unpause *flow*; return False when it already was in that state.

    A paused flow creates no scheduled runs and its cursors stay where they are, so on unpause
    its catch-up policy decides what the missed instants do.
    """

    def op(db: sqlite3.Connection) -> bool:
        if paused:
            cur = db.execute(
                "INSERT INTO paused (flow, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (flow, codec.iso(now)),
            )
        else:
            cur = db.execute("DELETE FROM paused WHERE flow = ?", (flow,))
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


_CHUNK = 400  # (flow, trigger) pairs per statement: far below SQLite's variable limit


def read_state_of(conn: sqlite3.Connection, keys: Collection[tuple[str, str]]) -> ScheduleState:
    """The stored cursors of the (flow, trigger key) pairs in *keys* only, and every paused
    flow: what a pass that plans only the due triggers reads. Each pair is one lookup in the
    primary key, so the read costs the same however many schedules are stored."""
    if not _has_schedule_tables(conn):
        return ScheduleState()
    out: dict[tuple[str, str], datetime] = {}
    pairs = list(keys)
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        values = ", ".join(["(?, ?)"] * len(chunk))
        for flow, trigger, cursor in conn.execute(
            cursors_of_sql(values), [part for pair in chunk for part in pair]
        ):
            moment = codec.parse_iso(cursor)
            assert moment is not None
            out[(flow, trigger)] = moment
    return ScheduleState(out, paused_flows(conn))


def cursors_of_sql(values: str) -> str:
    """The keyed cursor read for *values* (``(?, ?), ...``): a join from the constant rows,
    so each pair is a search of the primary key (``(flow, trigger) IN (VALUES ...)`` scans the
    table instead, in SQLite 3.40)."""
    return (
        "SELECT s.flow, s.trigger, s.cursor FROM (VALUES " + values + ") AS k "
        "JOIN schedules s ON s.flow = k.column1 AND s.trigger = k.column2"
    )
