"""The one writer: coalesces state changes in memory and commits them in batches."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.abc import TaskStatus

from runtime.errors import StoreError
from runtime.states import RUN_TERMINAL, TASK_TERMINAL
from runtime.store.batch import (
    REFUSED,
    Batch,
    Failures,
    Op,
    Refused,
    Waiter,
    build_ops,
    describe_backlog,
    log_refused,
    put_back_rows,
    write_batch,
)
from runtime.store.rows import AttemptKey, AttemptRow, RunRow, TaskKey, TaskRow

log = logging.getLogger("sluiceway.runtime.store")

# a row built when its batch is taken, from the engine's newest state (see put_task_from)
TaskMaker = Callable[[], TaskRow]
AttemptMaker = Callable[[], AttemptRow]
BUSY_STEP = 0.1  # the longest one attempt waits inside SQLite for another connection's lock


class Writer:
    """Owns the write connection. Everyone else calls the cheap ``put_*`` methods.

    State rows (runs, tasks, attempts) are keyed, so a task that goes pending -> running ->
    succeeded within one batch is written once. Ops (run creation, flow rows) run in order at
    the start of a batch, each under its own savepoint so one bad op fails only its caller.
    A batch is committed ``interval`` seconds after its first change, or at once when someone
    waits for durability (:meth:`flush`, :meth:`submit`).

    A batch that fails (another connection holds the write lock past ``busy_timeout``, the
    disk is full) is never dropped: its rows and queued ops go back into the queue, where a
    newer state of the same row still wins, and it is tried again with backoff; a flush goes
    on waiting, an awaited op (:meth:`submit`) fails to its caller as it did before. The
    first failure of an episode is logged, and so is the recovery; :attr:`failing` says why
    while it lasts, and ``on_health`` is called at both ends.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        interval: float = 0.05,
        path: Path | str = "",
        busy_timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._interval = interval
        self._path = str(path)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._runs: dict[int, RunRow] = {}
        self._tasks: dict[TaskKey, TaskRow | TaskMaker] = {}
        self._attempts: dict[AttemptKey, AttemptRow | AttemptMaker] = {}
        self._logs: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._ops: list[Waiter] = []
        self._flushers: list[Waiter] = []
        self._has_work = anyio.Event()
        self._woken = False
        self._urgent = anyio.Event()
        self._inflight: anyio.Event | None = None
        self._rows_since: float | None = None  # when the oldest uncommitted row was queued
        self._lock = anyio.Lock()  # one batch at a time: the writer task's, or close()'s
        self._closed = False
        self._abandoned = anyio.Event()
        self._failures = Failures(busy_timeout, self._path)
        self.on_health: Callable[[], None] | None = None  # called when failing starts or ends
        self.batches = 0
        self.failed_batches = 0

    # --- producers (loop thread; add_log also from worker threads) ---

    # A queued terminal state is final, as it is in the tables (the WHERE clauses of the
    # upserts): a later change of the same row within the same batch is dropped too.

    def put_run(self, row: RunRow) -> None:
        """Queue the newest state of run ``row.id``."""
        queued = self._runs.get(row.id)
        if queued is not None and queued.state in RUN_TERMINAL:
            return
        self._runs[row.id] = row
        self._wake()

    def put_task(self, row: TaskRow) -> None:
        """Queue the newest state of one task (or mapped instance)."""
        key = row.key
        queued = self._tasks.get(key)
        if queued is not None and not isinstance(queued, tuple):
            queued = self._tasks[key] = queued()  # rare: a row from outside the engine
        if queued is not None and queued.state in TASK_TERMINAL:
            return
        self._tasks[key] = row
        if not self._woken:
            self._wake()

    def put_task_from(self, key: TaskKey, make: TaskMaker) -> None:
        """Queue task row *key*, built by *make* when the batch is taken: a task that changes
        state three times within a batch costs one row, built once (the engine's hot path)."""
        self._tasks[key] = make
        if not self._woken:
            self._wake()

    def put_attempt(self, row: AttemptRow) -> None:
        """Queue the newest state of one attempt."""
        key = (row.run_id, row.name, row.idx, row.attempt)  # not row.key: the hot path
        queued = self._attempts.get(key)
        if isinstance(queued, tuple) and queued.state in TASK_TERMINAL:
            return
        self._attempts[key] = row
        if not self._woken:
            self._wake()

    def put_attempt_from(self, key: AttemptKey, make: AttemptMaker) -> None:
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
        self._ops.append(Waiter(op, urgent=False))
        self._wake()

    def put_op_from(self, make: Callable[[], Op]) -> None:
        """Queue the op *make* builds (it must not raise) when its batch is taken, in the
        same transaction as the rows queued before it: what a producer gathers until then
        goes in one op, with the state changes that caused it (alerts)."""
        self._check_open()
        self._ops.append(Waiter(make=make, urgent=None))
        self._wake()

    async def submit(self, op: Op) -> Any:
        """Run *op* inside the next transaction and return its value once committed."""
        self._check_open()
        waiter = Waiter(op)
        self._ops.append(waiter)
        self._wake(urgent=True)
        return await waiter.wait()

    async def flush(self) -> None:
        """Return once everything queued before this call is committed (while the store
        cannot write, that is once it can again)."""
        if not self._pending():
            if self._inflight is not None:
                await self._inflight.wait()
            if not self._pending():
                return
            # the batch in flight failed: its rows are queued again
        waiter = Waiter()
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

    # --- health ---

    @property
    def failing(self) -> str | None:
        """Why changes cannot be committed, while they cannot (``None`` when they can)."""
        return self._failures.failing

    def backlog(self) -> str:
        """What is queued and not committed, e.g. ``1 run, 3 task rows, 20 log lines``."""
        return describe_backlog(
            (len(self._ops), "write"),
            (len(self._runs), "run row"),
            (len(self._tasks), "task row"),
            (len(self._attempts), "attempt row"),
            (len(self._logs), "log line"),
            (len(self._events), "event"),
        )

    def abandon(self) -> None:
        """Stop :meth:`close` from retrying what cannot be committed (a second Ctrl-C)."""
        self._abandoned.set()

    def _notify_health(self) -> None:
        if self.on_health is not None:
            try:
                self.on_health()
            except Exception:  # a status line must never stop the writer
                log.exception("store: reporting the writer's state failed")

    # --- the writer task ---

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled; started as a child of the store's task group."""
        task_status.started()
        while True:
            await self._has_work.wait()
            if self._closed:  # close() commits what is left, on its caller's task
                return
            retry_at = self._failures.retry_at
            if retry_at is not None:  # the last batch failed: it is tried again
                await anyio.sleep(max(0.0, retry_at - anyio.current_time()))
            elif not self._urgent.is_set():
                with anyio.move_on_after(self._interval):
                    await self._urgent.wait()
            # A batch once begun is finished, even when the store is being cancelled: a cancel
            # between BEGIN and COMMIT would throw away every change in it.
            with anyio.CancelScope(shield=True):
                await self._commit_batch()

    async def close(self, within: float = 30.0) -> None:
        """Commit what is queued, on the caller's task: the writer task may be cancelled
        already (the store's scope was). Afterwards writes are refused and log lines from
        stray threads are dropped.

        What cannot be committed (a locked database, a full disk) is retried for up to
        *within* seconds, or until :meth:`abandon`; then whoever waits gets the error, which
        is raised (the caller reports it).

        :raises StoreError: saying what was not committed, and why
        """
        self._closed = True
        deadline = anyio.current_time() + within
        said = False
        while True:
            await self._commit_batch(everything=True)
            if not (self._pending() or self._flushers):
                return
            now = anyio.current_time()
            if now >= deadline or self._abandoned.is_set():
                break
            if not said:
                said = True
                log.warning(
                    "store %s: %s not committed yet (%s); retrying for up to %gs before giving up",
                    self._path,
                    self.backlog(),
                    self._failures.describe(),
                    within,
                )
            with anyio.move_on_after(min(deadline, self._failures.retry_at or now) - now):
                await self._abandoned.wait()
        why = "given up" if self._abandoned.is_set() else f"gave up after {within:g}s"
        error = StoreError(
            f"{self._path}: could not commit {self.backlog()} ({self._failures.describe()}; "
            f"{why}): that history is lost"
        )
        for waiter in (*self._ops, *self._flushers):
            waiter.error = waiter.error or error
            waiter.done.set()
        self._ops, self._flushers = [], []
        self._runs, self._tasks, self._attempts, self._logs, self._events = {}, {}, {}, [], []
        raise error

    async def _commit_batch(self, *, everything: bool = False) -> None:
        """Commit what is queued as one transaction, unless there is nothing to commit;
        *everything*: the rows too, even when an awaited op alone could go first."""
        async with self._lock:
            if self._closed and not everything:
                return  # the writer task woke after close() took over
            if self._pending() or self._flushers:
                await self._commit_pending(everything)

    async def _commit_pending(self, everything: bool = False) -> None:
        flushers, self._flushers = self._flushers, []
        self._has_work = anyio.Event()
        self._woken = False
        self._urgent = anyio.Event()
        inflight = self._inflight = anyio.Event()
        batch = self._take(everything, flushing=bool(flushers))
        try:
            await self._write(batch)
        except BaseException as exc:
            # rolled back: nothing of it was written, so all of it goes back into the queue
            self._put_back(batch, flushers)
            inflight.set()
            if isinstance(exc, Exception):
                self._failed(exc)
                return
            raise
        self.batches += 1
        for waiter in (*batch.ops, *flushers):
            waiter.done.set()
        inflight.set()
        if self._failures.since is not None and self._failures.recovered(anyio.current_time()):
            self._notify_health()

    def _take(self, everything: bool, *, flushing: bool) -> Batch:
        """What the next transaction writes: every queued op, and the rows unless an awaited
        op may go first."""
        ops, self._ops = self._ops, []
        now = anyio.current_time()
        if self._rows_since is None:
            self._rows_since = now
        fresh = now - self._rows_since < self._interval
        if not everything and ops and not flushing and fresh and any(w.urgent for w in ops):
            # someone waits for an op (a run row before its trigger is acknowledged): commit
            # just the ops now, and the rows with the timed batch, so the op's latency does
            # not grow with the engine's load; rows never wait longer than the interval
            self._ops = [w for w in ops if w.urgent is None]  # these wait for the rows
            if self._pending():
                self._wake()
            return Batch([w for w in ops if w.urgent is not None])
        self._rows_since = None
        build_ops(ops)  # with the rows' snapshot: a later alert goes with its later state
        batch = Batch(ops, self._runs, logs=self._logs, events=self._events)
        # rows queued as makers are built now, on the loop thread, from the newest state
        batch.tasks = {k: v if isinstance(v, tuple) else v() for k, v in self._tasks.items()}
        batch.attempts = {k: v if isinstance(v, tuple) else v() for k, v in self._attempts.items()}
        self._runs, self._tasks, self._attempts, self._logs, self._events = {}, {}, {}, [], []
        return batch

    async def _write(self, batch: Batch) -> None:
        # aiosqlite runs every statement as one hop to its thread; a batch is 7-12 statements,
        # so the whole batch goes to that thread as one function (aiosqlite has no public call
        # for this: open_store checks the two attributes it needs)
        try:
            await self._db._execute(write_batch, self._db._conn, batch)  # type: ignore[no-untyped-call]
        except REFUSED:
            # a row that can never be written must not hold back every other row: the batch
            # again, row by row, without the rows refused (each one logged)
            refused: Refused = []
            await self._db._execute(write_batch, self._db._conn, batch, refused)  # type: ignore[no-untyped-call]
            log_refused(self._path, refused)

    def _put_back(self, batch: Batch, flushers: list[Waiter]) -> None:
        """Queue a failed batch again, in front of what came since; a row queued since is
        newer and wins, unless the failed batch had the row's terminal state (final)."""
        self._ops[:0] = batch.ops
        self._flushers[:0] = flushers
        put_back_rows(batch, self._runs, self._tasks, self._attempts)
        self._logs[:0] = batch.logs
        self._events[:0] = batch.events
        if batch.has_rows():
            # rows go with the next try, not behind the next awaited op
            now = anyio.current_time()
            self._rows_since = min(self._rows_since or now, now - self._interval)
        if self._pending() or self._flushers:
            self._wake()

    def _failed(self, exc: Exception) -> None:
        self.failed_batches += 1
        if not self._failures.failed(exc, anyio.current_time()):
            return  # a short busy wait: tried again at once
        # Whoever awaits an op (a run row, a claim) is told now, as SQLite would tell it
        # after its busy timeout: it decides whether to wait (a `sluiceway trigger` exits
        # non-zero; the scheduler tries again). Rows and queued ops stay, and so do flushes.
        awaited = [waiter for waiter in self._ops if waiter.urgent]
        if awaited:
            self._ops = [waiter for waiter in self._ops if not waiter.urgent]
            for waiter in awaited:
                waiter.error = StoreError(
                    f"{self._path}: cannot commit ({type(exc).__name__}: {exc})"
                )
                waiter.error.__cause__ = exc
                waiter.done.set()
        if self._failures.begin(self.backlog()):
            self._notify_health()
