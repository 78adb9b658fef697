"""File claims of ``files()`` triggers: a file's content taken together with its queued run,
and what became of the file after the run.

A claim is keyed (flow, path, size, mtime_ns) under a unique index and is inserted in the
same transaction as its run: either both are committed or neither, so a file's content runs
exactly once however often it is seen again (restart, rescan, a duplicate event), while the
same path rewritten (a new size or mtime) is new content and claimed again.

Writes are writer ops (one transaction each, committed before they return); reads are plain
functions on a sqlite3 connection, for ``await store.read(fn)`` or the CLI's reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runtime import codec
from runtime.store import schema
from runtime.store.lock import process_alive

if TYPE_CHECKING:
    from runtime.store import Store

__all__ = [
    "ClaimRow",
    "Claimed",
    "FileKey",
    "Settlement",
    "claim_files",
    "claim_of",
    "claimed_among",
    "claims_of_runs",
    "has_claims",
    "latest_claims",
    "settle_claims",
    "unsettled_ended",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CHUNK = 400  # keys per read statement: far below SQLite's variable limit


@dataclass(frozen=True, slots=True)
class FileKey:
    """A file's content as a claim knows it: its absolute path, size and mtime in ns."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim this call made, and the run queued for it."""

    key: FileKey
    claim_id: int
    run_id: int


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A stored claim, with the state of its run.

    :ivar outcome: ``None`` until settled; then ``moved``, ``deleted``, ``left`` (the
        trigger leaves files), ``kept`` (the file changed or went away since its claim: not
        touched) or ``failed`` (the move or delete failed: ``settle_error`` says why)
    """

    id: int
    flow: str
    trigger: str
    key: FileKey
    run_id: int | None
    run_state: str | None
    run_epoch: int | None
    run_ended_at: str | None
    claimed_at: str
    settled_at: str | None
    outcome: str | None
    moved_to: str | None
    settle_error: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of a claimed file after its run (see :attr:`ClaimRow.outcome`)."""

    claim_id: int
    outcome: str
    moved_to: str | None = None
    error: str | None = None


def file_record(key: FileKey) -> dict[str, Any]:
    """``{"path", "size", "mtime"}`` of *key*: the mtime as ISO UTC."""
    return {"path": key.path, "size": key.size, "mtime": codec.iso(mtime_of(key.mtime_ns))}


def mtime_of(mtime_ns: int) -> datetime:
    """A file's mtime in ns as an aware UTC datetime (microseconds kept)."""
    return _EPOCH + timedelta(microseconds=mtime_ns // 1000)


def _run_row(
    flow: str, params: str, trigger: dict[str, Any], key: str, source_hash: str | None,
    created: str | None, epoch: int | None,
) -> tuple[Any, ...]:  # fmt: skip
    # logical_date = the claim time: what a file run is "for" is the moment it was taken
    return (
        flow, "queued", params, codec.dumps_str(trigger), created, key, None, source_hash,
        created, epoch,
    )  # fmt: skip


def _queue_run(db: sqlite3.Connection, row: tuple[Any, ...]) -> int:
    got = db.execute(schema.INSERT_RUN, row).fetchone()
    if got is not None:
        return int(got[0])
    # the run's key is derived from a claim that was new just now: it cannot exist, unless
    # someone wrote runs by hand; then the claim points at that run
    existing = db.execute(
        "SELECT id FROM runs WHERE flow = ? AND idempotency_key = ?", (row[0], row[5])
    ).fetchone()
    return int(existing[0])


async def claim_files(
    store: Store,
    *,
    flow: str,
    trigger_key: str,
    files: Sequence[FileKey],
    batch: bool,
    params: Mapping[str, Any],
    source_hash: str | None,
    now: datetime,
    epoch: int | None = None,
) -> list[Claimed]:
    """Claim *files* for *flow* and queue their runs in one transaction; return what was new.

    Content claimed before (by any trigger of the flow) is left out. Without *batch* each new
    claim gets its own run, with the trigger record ``{"kind": "file", "path", "size",
    "mtime"}``; with *batch* the new claims share one run, ``{"kind": "file", "paths": [...],
    "count": n}`` (no run when nothing was new). The runs are queued for the service
    (``epoch=None``) or for the process *epoch* that runs them itself (``run --file``).

    :raises StoreError: when the write fails (nothing of it is committed)
    """
    if not files:
        return []
    created = codec.iso(now)
    encoded = codec.encode_str(dict(params))
    claims = [(flow, trigger_key, f.path, f.size, f.mtime_ns, created) for f in files]

    def op(db: sqlite3.Connection) -> list[Claimed]:
        new: list[tuple[FileKey, int]] = []
        for row, key in zip(claims, files, strict=True):
            got = db.execute(schema.INSERT_CLAIM, row).fetchone()
            if got is not None:
                new.append((key, int(got[0])))
        if not new:
            return []
        if batch:
            paths = [file_record(k) for k, _ in new]
            trigger = {"kind": "file", "paths": paths, "count": len(paths)}
            run_key = f"files:{new[0][1]}"  # the batch's first claim: unique, and stable
            run_id = _queue_run(
                db, _run_row(flow, encoded, trigger, run_key, source_hash, created, epoch)
            )
            runs = [run_id] * len(new)
        else:
            runs = []
            for k, claim_id in new:
                trigger = {"kind": "file", **file_record(k)}
                row = _run_row(
                    flow, encoded, trigger, f"file:{claim_id}", source_hash, created, epoch
                )
                runs.append(_queue_run(db, row))
        db.executemany(
            "UPDATE file_claims SET run_id = ? WHERE id = ?",
            [(run_id, claim_id) for run_id, (_, claim_id) in zip(runs, new, strict=True)],
        )
        return [Claimed(k, c, r) for (k, c), r in zip(new, runs, strict=True)]

    result: list[Claimed] = await store.writer.submit(op)
    return result


async def settle_claims(store: Store, settled: Sequence[Settlement], now: datetime) -> int:
    """Record what became of claimed files, in one transaction; claims settled before stay as
    they were. Returns how many claims this settled."""
    if not settled:
        return 0
    when = codec.iso(now)
    rows = [(when, s.outcome, s.moved_to, s.error, s.claim_id) for s in settled]

    def op(db: sqlite3.Connection) -> int:
        before = db.total_changes
        db.executemany(schema.SETTLE_CLAIM, rows)
        return db.total_changes - before

    count: int = await store.writer.submit(op)
    return count


# --- reads ---

_COLUMNS = (
    "c.id, c.flow, c.trigger, c.path, c.size, c.mtime_ns, c.run_id, r.state, r.epoch, "
    "r.ended_at, c.claimed_at, c.settled_at, c.outcome, c.moved_to, c.settle_error"
)


def _row(row: Sequence[Any]) -> ClaimRow:
    return ClaimRow(
        id=row[0], flow=row[1], trigger=row[2], key=FileKey(row[3], row[4], row[5]),
        run_id=row[6], run_state=row[7], run_epoch=row[8], run_ended_at=row[9],
        claimed_at=row[10], settled_at=row[11], outcome=row[12], moved_to=row[13],
        settle_error=row[14],
    )  # fmt: skip


def has_claims(conn: sqlite3.Connection) -> bool:
    """Whether the store has the claims table (a database older than schema version 6 read
    without migrating, e.g. by the CLI, has none: nothing was claimed)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'file_claims'"
    ).fetchone()
    return bool(row[0])


def claimed_among(conn: sqlite3.Connection, flow: str, keys: Collection[FileKey]) -> set[FileKey]:
    """Which of *keys* *flow* has claimed: one lookup in the unique index per key, so the
    read costs the same however long the history is."""
    if not keys or not has_claims(conn):
        return set()
    found: set[FileKey] = set()
    wanted = list(keys)
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        sql = (
            "SELECT c.path, c.size, c.mtime_ns FROM (VALUES " + values + ") AS k "
            "JOIN file_claims c ON c.flow = ? AND c.path = k.column1 AND c.size = k.column2 "
            "AND c.mtime_ns = k.column3"
        )
        args = [part for k in chunk for part in (k.path, k.size, k.mtime_ns)]
        found.update(FileKey(*row) for row in conn.execute(sql, [*args, flow]))
    return found


def claims_of_runs(conn: sqlite3.Connection, run_ids: Collection[int]) -> list[ClaimRow]:
    """The unsettled claims of the runs *run_ids*."""
    if not run_ids or not has_claims(conn):
        return []
    out: list[ClaimRow] = []
    ids = list(run_ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = (
            f"SELECT {_COLUMNS} FROM file_claims c LEFT JOIN runs r ON r.id = c.run_id "
            f"WHERE c.settled_at IS NULL AND c.run_id IN ({marks}) ORDER BY c.id"
        )
        out.extend(_row(row) for row in conn.execute(sql, chunk))
    return out


def unsettled_ended(conn: sqlite3.Connection) -> list[tuple[ClaimRow, bool]]:
    """Claims not settled yet whose run has ended, each with whether the process that ran
    the run is still alive (then it may be settling them itself): what to move after a
    restart."""
    if not has_claims(conn):
        return []
    sql = (
        f"SELECT {_COLUMNS}, e.pid, e.boot_id, e.proc_start, e.stopped_at "
        "FROM file_claims c INDEXED BY file_claims_unsettled "
        "JOIN runs r ON r.id = c.run_id LEFT JOIN epochs e ON e.id = r.epoch "
        f"WHERE c.settled_at IS NULL AND r.state IN {schema.TERMINAL_RUN} ORDER BY c.id"
    )
    out = []
    for row in conn.execute(sql):
        pid, boot_id, proc_start, stopped = row[-4:]
        alive = pid is not None and stopped is None and process_alive(pid, boot_id, proc_start)
        out.append((_row(row), alive))
    return out


def latest_claims(conn: sqlite3.Connection, flow: str) -> list[ClaimRow]:
    """The newest claim of every path *flow* ever claimed, with its run's state: what
    ``sluiceway files`` shows beside the folder's listing."""
    if not has_claims(conn):
        return []
    sql = (
        f"SELECT {_COLUMNS} FROM file_claims c LEFT JOIN runs r ON r.id = c.run_id "
        "WHERE c.id IN (SELECT MAX(id) FROM file_claims WHERE flow = ? GROUP BY path) "
        "ORDER BY c.path"
    )
    return [_row(row) for row in conn.execute(sql, (flow,))]


def claim_of(conn: sqlite3.Connection, flow: str, key: FileKey) -> ClaimRow | None:
    """The claim of exactly this content of a file, or ``None`` when it was never claimed."""
    if not has_claims(conn):
        return None
    sql = (
        f"SELECT {_COLUMNS} FROM file_claims c LEFT JOIN runs r ON r.id = c.run_id "
        "WHERE c.flow = ? AND c.path = ? AND c.size = ? AND c.mtime_ns = ?"
    )
    row = conn.execute(sql, (flow, key.path, key.size, key.mtime_ns)).fetchone()
    return None if row is None else _row(row)
