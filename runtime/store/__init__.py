"""The store: one SQLite file, one writer task, and read queries beside it."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from runtime import codec
from runtime.errors import StoreError
from runtime.store import migrations, schema
from runtime.store.lock import this_process
from runtime.store.reader import connect_reader, identify
from runtime.store.writer import BUSY_STEP, Writer

__all__ = ["Store", "connect_reader", "open_store"]

log = logging.getLogger("sluiceway.runtime.store")

T = TypeVar("T")


class Store:
    """The run history. Writes go through the batched :class:`Writer`; reads use their own
    connection in a worker thread so they never wait behind a batch."""

    def __init__(self, path: Path, writer: Writer, reader: sqlite3.Connection) -> None:
        self.path = path
        self.writer = writer
        self._reader = reader
        self._read_lock = anyio.Lock()
        # the engine's hot path calls these directly
        self.put_run = writer.put_run
        self.put_task = writer.put_task
        self.put_task_from = writer.put_task_from
        self.put_attempt = writer.put_attempt
        self.put_attempt_from = writer.put_attempt_from
        self.add_log = writer.add_log
        self.add_event = writer.add_event
        self.flush = writer.flush

    async def create_run(
        self,
        *,
        flow: str,
        params: dict[str, Any],
        trigger: dict[str, Any],
        logical_date: datetime,
        created_at: datetime,
        key: str | None = None,
        retry_of: int | None = None,
        source_hash: str | None = None,
        epoch: int | None = None,
    ) -> tuple[int, bool]:
        """Commit a queued run and return ``(run_id, created)``.

        With an idempotency *key*, a second request for the same (flow, key) returns the first
        run's id and ``created=False``: the unique index decides, so races cannot duplicate.
        """
        row = (
            flow,
            "queued",
            codec.encode_str(params),  # faithful: NaN, datetime, ... read back the same
            codec.dumps_str(trigger),
            codec.iso(logical_date),
            key,
            retry_of,
            source_hash,
            codec.iso(created_at),
            epoch,
        )

        def op(db: sqlite3.Connection) -> tuple[int, bool]:
            got = db.execute(schema.INSERT_RUN, row).fetchone()
            if got is not None:
                return int(got[0]), True
            existing = db.execute(
                "SELECT id FROM runs WHERE flow = ? AND idempotency_key = ?", (flow, key)
            ).fetchone()
            assert existing is not None
            return int(existing[0]), False

        result: tuple[int, bool] = await self.writer.submit(op)
        return result

    def record_flow(self, name: str, path: str | None, source_hash: str, now: datetime) -> None:
        """Remember a flow's file and source hash (queued: written with the next batch)."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(schema.UPSERT_FLOW, (name, path, source_hash, codec.iso(now)))

        self.writer.put_op(op)

    async def claim_runs(
        self, run_ids: Sequence[int], epoch: int | None, now: datetime
    ) -> dict[int, dict[str, Any]]:
        """Move the queued runs among *run_ids* to running for this process, in one
        statement; runs not queued any more (claimed elsewhere, cancelled) are left out."""

        def op(db: sqlite3.Connection) -> dict[int, dict[str, Any]]:
            marks = ",".join("?" * len(run_ids))
            rows = db.execute(
                "UPDATE runs SET state = 'running', epoch = ?, started_at = ?, wait_reason = NULL "
                f"WHERE state = 'queued' AND id IN ({marks}) "
                "RETURNING id, params, trigger, logical_date, cancel_requested, retry_of",
                (epoch, codec.iso(now), *run_ids),
            ).fetchall()
            return {
                int(row[0]): {
                    "params": codec.loads(row[1]),
                    "trigger": codec.loads(row[2]),
                    "logical_date": row[3],
                    "cancel_requested": bool(row[4]),
                    "retry_of": row[5],
                }
                for row in rows
            }

        if not run_ids:
            return {}
        claimed: dict[int, dict[str, Any]] = await self.writer.submit(op)
        return claimed

    async def mark_interrupted(self, run_id: int, epoch: int | None, now: datetime) -> None:
        """Record the attempts a stopped process left running as interrupted, and take the
        run over for *epoch*."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE attempts SET state = 'failed', ended_at = ?, "
                "error_type = 'InterruptedRunError', "
                "error_message = 'interrupted by service restart', interrupted = 1 "
                "WHERE run_id = ? AND state = 'running'",
                (codec.iso(now), run_id),
            )
            db.execute("UPDATE runs SET epoch = ? WHERE id = ?", (epoch, run_id))

        await self.writer.submit(op)

    async def start_epoch(self, now: datetime) -> int:
        """Record this process; the id marks the runs it executes, so another process can
        tell a run left behind by a dead process from one a live process is running."""
        pid, boot_id, proc_start = this_process()

        def op(db: sqlite3.Connection) -> int:
            row = db.execute(
                "INSERT INTO epochs (pid, boot_id, proc_start, started_at) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (pid, boot_id, proc_start, codec.iso(now)),
            ).fetchone()
            return int(row[0])

        epoch: int = await self.writer.submit(op)
        return epoch

    def end_epoch(self, epoch: int, now: datetime) -> None:
        """Record a clean stop (queued: the store's close commits it, also when cancelled)."""

        def op(db: sqlite3.Connection) -> None:
            db.execute("UPDATE epochs SET stopped_at = ? WHERE id = ?", (codec.iso(now), epoch))

        self.writer.put_op(op)

    async def read(self, fn: Callable[..., T], *args: Any, flush: bool = True) -> T:
        """Run a query function from :mod:`runtime.store.queries` off the event loop.

        What this process queued before the call is committed first, so reads see own
        writes; ``flush=False`` skips that for a read no queued change can affect.
        """
        if flush:
            await self.writer.flush()
        async with self._read_lock:
            return await anyio.to_thread.run_sync(fn, self._reader, *args)


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    async with db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ) as cur:
        exists = await cur.fetchone() is not None
    row = None
    if exists:
        async with db.execute("SELECT version FROM schema_version") as cur:
            row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this Sluiceway "
            f"({schema.SCHEMA_VERSION}); upgrade Sluiceway"
        )
    for number in range(version + 1, schema.SCHEMA_VERSION + 1):
        script = migrations.MIGRATIONS[number - 1]
        # one transaction per migration, the version table's creation included: a crash
        # mid-way leaves the previous version intact
        await db.executescript(
            "BEGIN IMMEDIATE;\n"
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);\n"
            + script
            + "\nDELETE FROM schema_version;"
            + f"\nINSERT INTO schema_version (version) VALUES ({number});\nCOMMIT;"
        )
        log.info("store=%s migrated to schema version %d", path, number)


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600), as the lock file is; an
    existing file keeps its mode. SQLite gives its -wal and -shm files the same mode."""
    try:
        fd = os.open(os.path.realpath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"{path}: cannot create database: {exc}") from exc
    os.close(fd)


@asynccontextmanager
async def open_store(
    path: str | Path,
    *,
    interval: float = 0.05,
    busy_timeout: float = 10.0,
    commit_timeout: float = 30.0,
) -> AsyncIterator[Store]:
    """Open (creating and migrating) the SQLite file at *path* and run its writer.

    Everything queued is committed before the context exits, on every exit path; what cannot
    be (a locked database, a full disk) is retried for up to *commit_timeout* seconds, then
    the exit raises :class:`StoreError` saying what was lost.

    :param interval: how long a batch may collect changes before it is committed
    :param busy_timeout: how long a write may wait for another connection's lock before the
        writer reports that it cannot commit (it goes on retrying)
    :param commit_timeout: how long the exit retries what cannot be committed
    :raises StoreError: when the file cannot be opened or migrated, is not Sluiceway's, or
        the last changes could not be committed
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise StoreError(f"{path}: folder {path.parent} does not exist")
    _create_private(path)
    db = await _connect(path)
    reader: sqlite3.Connection | None = None
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
        await _prepare(db, path, busy_timeout)
        reader = connect_reader(path)
        writer = Writer(db, interval=interval, path=path, busy_timeout=busy_timeout)
        async with _writing(writer, commit_timeout):
            yield Store(path, writer, reader)
    finally:
        with anyio.CancelScope(shield=True):
            if reader is not None:
                reader.close()
            await db.close()


async def _connect(path: Path) -> aiosqlite.Connection:
    try:
        # shielded: a cancel during connect leaks the connection's thread, which then keeps
        # the process from exiting; a connect is quick, and open_store's finally closes it
        with anyio.CancelScope(shield=True):
            db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc
    return db


async def _prepare(db: aiosqlite.Connection, path: Path, busy_timeout: float) -> None:
    """Check the file is Sluiceway's (or new), set the pragmas and migrate the schema."""
    if not (hasattr(db, "_execute") and hasattr(db, "_conn")):
        raise StoreError(
            f"aiosqlite {aiosqlite.__version__} lacks Connection._execute/_conn, which the "
            "writer uses to commit a batch in one call; install aiosqlite<0.23"
        )
    try:
        await db.execute(schema.busy_timeout(busy_timeout))
        # before any pragma that writes: a file that is not Sluiceway's stays untouched
        await db._execute(identify, db._conn, path)  # type: ignore[no-untyped-call]
        for pragma in schema.PRAGMAS:
            if pragma != schema.BUSY_TIMEOUT:
                await db.execute(pragma)
        await _migrate(db, path)
        # from now on a write waits for a lock in short steps, each tried again by the
        # writer until busy_timeout is over: close() can stop waiting between two steps
        await db.execute(schema.busy_timeout(min(busy_timeout, BUSY_STEP)))
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open or migrate database: {exc}") from exc


@asynccontextmanager
async def _writing(writer: Writer, commit_timeout: float) -> AsyncIterator[None]:
    """Run *writer* while the body runs; on every exit, commit what is queued (retried for up
    to *commit_timeout*), and raise :class:`StoreError` for what could not be."""
    failure: BaseException | None = None
    lost: StoreError | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        try:
            yield
        except BaseException as exc:  # noqa: BLE001 - re-raised just below
            # raised again below, outside the task group: the caller sees its own
            # ParamError or cancellation, not an ExceptionGroup around it
            failure = exc
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await writer.close(commit_timeout)
                except StoreError as exc:  # logged; raised below unless failure is
                    lost = exc
            tg.cancel_scope.cancel()
    if failure is not None:
        if lost is not None:  # the caller's own error goes on: say this one here
            log.error("store: %s", lost)
        raise failure
    if lost is not None:
        raise lost
