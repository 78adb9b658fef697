"""The one writer: coalesces state changes in memory and commits them in batches."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import aiosqlite
import anyio
from anyio.abc import TaskStatus

from runtime.errors import StoreError
from runtime.states import RUN_TERMINAL, TASK_TERMINAL
from runtime.store import schema

log = logging.getLogger("sluiceway.runtime.store")

# An op runs inside the batch's transaction, on the writer's thread, with the sqlite3
# connection: the whole batch is one hop to that thread.
Op = Callable[[sqlite3.Connection], Any]
RowMaker = Callable[[], tuple[Any, ...]]


class _Waiter:
    """One caller waiting for its write (or everything before it) to be committed."""

    __slots__ = ("done", "error", "op", "urgent", "value")

    def __init__(self, op: Op | None = None, *, urgent: bool = True) -> None:
        self.op = op
        self.urgent = urgent  # someone awaits it (put_op's are not awaited)
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise StoreError(f"write failed: {self.error}") from self.error
        return self.value


class Writer:
    """Owns the write connection. Everyone else calls the cheap ``put_*`` methods.

    State rows (runs, tasks, attempts) are keyed, so a task that goes pending -> running ->
    succeeded within one batch is written once. Ops (run creation, flow rows) run in order at
    the start of a batch, each under its own savepoint so one bad op fails only its caller.
    A batch is committed ``interval`` seconds after its first change, or at once when someone
    waits for durability (:meth:`flush`, :meth:`submit`).
    """

    def __init__(self, db: aiosqlite.Connection, *, interval: float = 0.05) -> None:
        self._db = db
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._runs: dict[int, tuple[Any, ...]] = {}
        self._tasks: dict[tuple[int, str, int], tuple[Any, ...] | RowMaker] = {}
        self._attempts: dict[tuple[int, str, int, int], tuple[Any, ...] | RowMaker] = {}
        self._logs: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._ops: list[_Waiter] = []
        self._flushers: list[_Waiter] = []
        self._has_work = anyio.Event()
        self._woken = False
        self._urgent = anyio.Event()
        self._inflight: anyio.Event | None = None
        self._rows_since: float | None = None  # when the oldest uncommitted row was queued
        self._lock = anyio.Lock()  # one batch at a time: the writer task's, or close()'s
        self._closed = False
        self.batches = 0

    # --- producers (loop thread; add_log also from worker threads) ---

    # A queued terminal state is final, as it is in the tables (the WHERE clauses of the
    # upserts): a later change of the same row within the same batch is dropped too.

    def put_run(self, run_id: int, row: tuple[Any, ...]) -> None:
        """Queue the newest state of run *run_id*: (state, started_at, ended_at, error, wait)."""
        queued = self._runs.get(run_id)
        if queued is not None and queued[0] in RUN_TERMINAL:
            return
        self._runs[run_id] = (*row, run_id)
        self._wake()

    def put_task(self, row: tuple[Any, ...]) -> None:
        """Queue the newest state of one task row (see schema.UPSERT_TASK for the columns)."""
        key = (row[0], row[1], row[2])
        queued = self._tasks.get(key)
        if queued is not None and not isinstance(queued, tuple):
            queued = self._tasks[key] = queued()  # rare: a row from outside the engine
        if queued is not None and queued[3] in TASK_TERMINAL:
            return
        self._tasks[key] = row
        if not self._woken:
            self._wake()

    def put_task_from(self, key: tuple[int, str, int], make: RowMaker) -> None:
        """Queue task row *key*, built by *make* when the batch is taken: a task that changes
        state three times within a batch costs one row, built once (the engine's hot path)."""
        self._tasks[key] = make
        if not self._woken:
            self._wake()

    def put_attempt(self, row: tuple[Any, ...]) -> None:
        """Queue the newest state of one attempt (see schema.UPSERT_ATTEMPT for the columns)."""
        key = (row[0], row[1], row[2], row[3])
        queued = self._attempts.get(key)
        if isinstance(queued, tuple) and queued[4] in TASK_TERMINAL:
            return
        self._attempts[key] = row
        if not self._woken:
            self._wake()

    def put_attempt_from(self, key: tuple[int, str, int, int], make: RowMaker) -> None:
        """Like :meth:`put_task_from`, for an attempt row."""
        self._attempts[key] = make
        if not self._woken:
            self._wake()

    def add_event(self, row: tuple[Any, ...]) -> None:
        self._events.append(row)
        self._wake()

    def add_log(self, row: tuple[Any, ...]) -> None:
        """Queue one log line; safe to call from a worker thread running a ``def`` task."""
        if threading.get_ident() == self._loop_thread:
            self._logs.append(row)
            self._wake()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.add_log, row)

    def put_op(self, op: Op) -> None:
        """Queue *op* for the next batch without waiting for it (committed at close at the
        latest, even when the caller is being cancelled)."""
        self._check_open()
        self._ops.append(_Waiter(op, urgent=False))
        self._wake()

    async def submit(self, op: Op) -> Any:
        """Run *op* inside the next transaction and return its value once committed."""
        self._check_open()
        waiter = _Waiter(op)
        self._ops.append(waiter)
        self._wake(urgent=True)
        return await waiter.wait()

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        if not self._pending():
            if self._inflight is not None:
                await self._inflight.wait()
            return
        waiter = _Waiter()
        self._flushers.append(waiter)
        self._wake(urgent=True)
        await waiter.wait()

    def _pending(self) -> bool:
        return bool(
            self._ops or self._runs or self._tasks or self._attempts or self._logs or self._events
        )

    def _wake(self, *, urgent: bool = False) -> None:
        self._woken = True
        if not self._has_work.is_set():
            self._has_work.set()
        if urgent and not self._urgent.is_set():
            self._urgent.set()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # --- the writer task ---

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled; started as a child of the store's task group."""
        task_status.started()
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():
                with anyio.move_on_after(self._interval):
                    await self._urgent.wait()
            # A batch once begun is finished, even when the store is being cancelled: a cancel
            # between BEGIN and COMMIT would throw away every change in it.
            with anyio.CancelScope(shield=True):
                await self._commit_batch()

    async def close(self) -> None:
        """Commit what is queued, on the caller's task: the writer task may be cancelled
        already (the store's scope was). Afterwards writes are refused and log lines from
        stray threads are dropped."""
        self._closed = True
        await self._commit_batch(everything=True)

    async def _commit_batch(self, *, everything: bool = False) -> None:
        """Commit what is queued as one transaction, unless there is nothing to commit;
        *everything*: the rows too, even when an awaited op alone could go first."""
        async with self._lock:
            if self._pending() or self._flushers:
                await self._commit_pending(everything)

    async def _commit_pending(self, everything: bool = False) -> None:
        ops, self._ops = self._ops, []
        flushers, self._flushers = self._flushers, []
        self._has_work = anyio.Event()
        self._woken = False
        self._urgent = anyio.Event()
        inflight = self._inflight = anyio.Event()
        runs: dict[int, tuple[Any, ...]] = {}
        tasks: dict[tuple[int, str, int], tuple[Any, ...]] = {}
        attempts: dict[tuple[int, str, int, int], tuple[Any, ...]] = {}
        logs: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        now = anyio.current_time()
        if self._rows_since is None:
            self._rows_since = now
        fresh = now - self._rows_since < self._interval
        if not everything and ops and not flushers and fresh and any(w.urgent for w in ops):
            # someone waits for an op (a run row before its trigger is acknowledged): commit
            # just the ops now, and the rows with the timed batch, so the op's latency does
            # not grow with the engine's load; rows never wait longer than the interval
            if self._pending():
                self._wake()
        else:
            self._rows_since = None
            runs, self._runs = self._runs, {}
            # rows queued as makers are built now, on the loop thread, from the newest state
            tasks = {k: v if isinstance(v, tuple) else v() for k, v in self._tasks.items()}
            attempts = {k: v if isinstance(v, tuple) else v() for k, v in self._attempts.items()}
            self._tasks, self._attempts = {}, {}
            logs, self._logs = self._logs, []
            events, self._events = self._events, []
        try:
            # aiosqlite runs every statement as one hop to its thread; a batch is 7-12
            # statements, so the whole batch goes to that thread as one function (aiosqlite
            # has no public call for this: open_store checks the two attributes it needs)
            await self._db._execute(  # type: ignore[no-untyped-call]
                _write_batch, self._db._conn, ops, runs, tasks, attempts, logs, events
            )
        except BaseException as exc:
            self._failed(exc, ops, flushers, inflight, runs, tasks, attempts, logs)
            if isinstance(exc, Exception):
                return
            raise
        self.batches += 1
        for waiter in (*ops, *flushers):
            waiter.done.set()
        inflight.set()

    def _failed(
        self,
        exc: BaseException,
        ops: list[_Waiter],
        flushers: list[_Waiter],
        inflight: anyio.Event,
        *rows: Any,
    ) -> None:
        for waiter in (*ops, *flushers):
            waiter.error = waiter.error or exc
            waiter.done.set()
        inflight.set()
        if isinstance(exc, Exception):
            log.error(
                "store batch failed, rolled back: %s: %s (%d ops, %d runs, %d tasks, "
                "%d attempts, %d log lines lost)",
                type(exc).__name__,
                exc,
                len(ops),
                *(len(r) for r in rows),
            )


def _write_batch(
    conn: sqlite3.Connection,
    ops: list[_Waiter],
    runs: dict[int, tuple[Any, ...]],
    tasks: dict[tuple[int, str, int], tuple[Any, ...]],
    attempts: dict[tuple[int, str, int, int], tuple[Any, ...]],
    logs: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
) -> None:
    """One batch as one transaction, on the connection's own thread. A rollback here needs
    no shield: nothing on the event loop can interrupt a function running in the thread."""
    # IMMEDIATE takes the write lock now; a deferred BEGIN could hit SQLITE_BUSY at its first
    # write, halfway through the batch.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for waiter in ops:
            conn.execute("SAVEPOINT op")
            try:
                assert waiter.op is not None
                waiter.value = waiter.op(conn)
            except Exception as exc:  # noqa: BLE001 - fails only this op's caller
                waiter.error = exc
                conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        if runs:
            conn.executemany(schema.UPDATE_RUN, runs.values())
        if tasks:
            conn.executemany(schema.UPSERT_TASK, tasks.values())
        if attempts:
            conn.executemany(schema.UPSERT_ATTEMPT, attempts.values())
        if logs:
            conn.executemany(schema.INSERT_LOG, logs)
        if events:
            conn.executemany(schema.INSERT_EVENT, events)
        conn.execute("COMMIT")  # one fsync for the whole batch
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
