"""The one writer: coalesces state changes in memory and commits them in batches."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
from anyio.abc import TaskStatus

from runtime.errors import StoreError
from runtime.states import RUN_TERMINAL, TASK_TERMINAL
from runtime.store import schema
from runtime.store.rows import AttemptKey, AttemptRow, RunRow, TaskKey, TaskRow

log = logging.getLogger("sluiceway.runtime.store")

# An op runs inside the batch's transaction, on the writer's thread, with the sqlite3
# connection: the whole batch is one hop to that thread.
Op = Callable[[sqlite3.Connection], Any]
# a row built when its batch is taken, from the engine's newest state (see put_task_from)
TaskMaker = Callable[[], TaskRow]
AttemptMaker = Callable[[], AttemptRow]

# A failed batch is put back and tried again: at once while another connection holds the
# write lock for less than the busy timeout (SQLite's own busy wait, continued here in short
# steps that close() can stop), else after a delay doubling from RETRY_FIRST to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
BUSY_STEP = 0.1  # the longest one attempt waits inside SQLite for another connection's lock
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
# what a row can never get past (a constraint, a value SQLite cannot bind), however often it
# is tried; other errors (locked, full, I/O) pass
REFUSED = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    OverflowError,
)


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
        if isinstance(self.error, StoreError):
            raise self.error
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
        self._busy_timeout = busy_timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._runs: dict[int, RunRow] = {}
        self._tasks: dict[TaskKey, TaskRow | TaskMaker] = {}
        self._attempts: dict[AttemptKey, AttemptRow | AttemptMaker] = {}
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
        self._abandoned = anyio.Event()
        # failures: the current streak of failed batches, and the logged episode within it
        self._error: BaseException | None = None
        self._failing_since: float | None = None
        self._episode_since: float | None = None
        self._retry_at: float | None = None
        self._delay = 0.0
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
        key = row.key
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
        """Return once everything queued before this call is committed (while the store
        cannot write, that is once it can again)."""
        if not self._pending():
            if self._inflight is not None:
                await self._inflight.wait()
            if not self._pending():
                return
            # the batch in flight failed: its rows are queued again
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

    # --- health ---

    @property
    def failing(self) -> str | None:
        """Why changes cannot be committed, while they cannot (``None`` when they can)."""
        if self._episode_since is None or self._error is None:
            return None
        return f"{type(self._error).__name__}: {self._error}"

    def backlog(self) -> str:
        """What is queued and not committed, e.g. ``1 run, 3 task rows, 20 log lines``."""
        counts = (
            (len(self._ops), "write"),
            (len(self._runs), "run row"),
            (len(self._tasks), "task row"),
            (len(self._attempts), "attempt row"),
            (len(self._logs), "log line"),
            (len(self._events), "event"),
        )
        parts = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts if n]
        return ", ".join(parts) or "nothing"

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
            if self._retry_at is not None:  # the last batch failed: it is tried again
                await anyio.sleep(max(0.0, self._retry_at - anyio.current_time()))
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
                    self._describe_error(),
                    within,
                )
            with anyio.move_on_after(min(deadline, self._retry_at or now) - now):
                await self._abandoned.wait()
        why = "given up" if self._abandoned.is_set() else f"gave up after {within:g}s"
        error = StoreError(
            f"{self._path}: could not commit {self.backlog()} ({self._describe_error()}; "
            f"{why}): that history is lost"
        )
        for waiter in (*self._ops, *self._flushers):
            waiter.error = waiter.error or error
            waiter.done.set()
        self._ops, self._flushers = [], []
        self._runs, self._tasks, self._attempts, self._logs, self._events = {}, {}, {}, [], []
        raise error

    def _describe_error(self) -> str:
        return f"{type(self._error).__name__}: {self._error}" if self._error else "no error"

    async def _commit_batch(self, *, everything: bool = False) -> None:
        """Commit what is queued as one transaction, unless there is nothing to commit;
        *everything*: the rows too, even when an awaited op alone could go first."""
        async with self._lock:
            if self._closed and not everything:
                return  # the writer task woke after close() took over
            if self._pending() or self._flushers:
                await self._commit_pending(everything)

    async def _commit_pending(self, everything: bool = False) -> None:
        ops, self._ops = self._ops, []
        flushers, self._flushers = self._flushers, []
        self._has_work = anyio.Event()
        self._woken = False
        self._urgent = anyio.Event()
        inflight = self._inflight = anyio.Event()
        runs: dict[int, RunRow] = {}
        tasks: dict[TaskKey, TaskRow] = {}
        attempts: dict[AttemptKey, AttemptRow] = {}
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
        batch = (ops, runs, tasks, attempts, logs, events)
        try:
            # aiosqlite runs every statement as one hop to its thread; a batch is 7-12
            # statements, so the whole batch goes to that thread as one function (aiosqlite
            # has no public call for this: open_store checks the two attributes it needs)
            try:
                await self._db._execute(_write_batch, self._db._conn, *batch)  # type: ignore[no-untyped-call]
            except REFUSED:
                # a row that can never be written must not hold back every other row: the
                # batch again, row by row, without the rows refused (each one logged)
                refused: list[tuple[str, tuple[Any, ...], Exception]] = []
                await self._db._execute(_write_batch, self._db._conn, *batch, refused)  # type: ignore[no-untyped-call]
                for table, row, error in refused:
                    log.error(
                        "store %s: the database refused a %s row, left out: %s: %s; row %r",
                        self._path,
                        table,
                        type(error).__name__,
                        error,
                        row[:4],
                    )
        except BaseException as exc:
            # rolled back: nothing of it was written, so all of it goes back into the queue
            self._put_back(ops, flushers, runs, tasks, attempts, logs, events)
            inflight.set()
            if isinstance(exc, Exception):
                self._failed(exc)
                return
            raise
        self.batches += 1
        for waiter in (*ops, *flushers):
            waiter.done.set()
        inflight.set()
        if self._failing_since is not None:
            self._recovered()

    def _put_back(
        self,
        ops: list[_Waiter],
        flushers: list[_Waiter],
        runs: dict[int, RunRow],
        tasks: dict[TaskKey, TaskRow],
        attempts: dict[AttemptKey, AttemptRow],
        logs: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
    ) -> None:
        """Queue a failed batch again, in front of what came since; a row queued since is
        newer and wins, unless the failed batch had the row's terminal state (final)."""
        self._ops[:0] = ops
        self._flushers[:0] = flushers
        for run_id, run in runs.items():
            newer = self._runs.get(run_id)
            if newer is None or (run.state in RUN_TERMINAL and newer.state not in RUN_TERMINAL):
                self._runs[run_id] = run
        for task_key, task in tasks.items():
            self._tasks[task_key] = _keep(task, self._tasks.get(task_key))
        for attempt_key, attempt in attempts.items():
            self._attempts[attempt_key] = _keep(attempt, self._attempts.get(attempt_key))
        self._logs[:0] = logs
        self._events[:0] = events
        if runs or tasks or attempts or logs or events:
            # rows go with the next try, not behind the next awaited op
            now = anyio.current_time()
            self._rows_since = min(self._rows_since or now, now - self._interval)
        if self._pending() or self._flushers:
            self._wake()

    def _failed(self, exc: Exception) -> None:
        now = anyio.current_time()
        self.failed_batches += 1
        self._error = exc
        if self._failing_since is None:
            self._failing_since, self._delay = now, 0.0
        if _busy(exc) and now - self._failing_since < self._busy_timeout:
            self._retry_at = now  # another connection holds the lock: SQLite's busy wait
            return
        self._delay = min(RETRY_MAX, max(RETRY_FIRST, self._delay * 2))
        self._retry_at = now + self._delay
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
        if self._episode_since is None:
            self._episode_since = self._failing_since
            kept = self.backlog()
            log.error(
                "store %s: cannot commit (%s: %s); %s, retried every %gs at most until it can",
                self._path,
                type(exc).__name__,
                exc,
                "nothing queued" if kept == "nothing" else f"{kept} kept in memory",
                RETRY_MAX,
            )
            self._notify_health()

    def _recovered(self) -> None:
        episode = self._episode_since
        self._error = self._failing_since = self._episode_since = self._retry_at = None
        self._delay = 0.0
        if episode is not None:
            log.warning(
                "store %s: committing again after %.1fs; nothing kept in memory was lost",
                self._path,
                anyio.current_time() - episode,
            )
            self._notify_health()


Row = TypeVar("Row", TaskRow, AttemptRow)


def _keep(old: Row, newer: Row | Callable[[], Row] | None) -> Row | Callable[[], Row]:
    """The row to queue for a key: *old* from a failed batch, or *newer* queued since."""
    if newer is None:
        return old
    if old.state in TASK_TERMINAL:
        built = newer if isinstance(newer, tuple) else newer()
        return built if built.state in TASK_TERMINAL else old
    return newer


def _busy(exc: Exception) -> bool:
    """Whether *exc* says another connection holds the database (SQLITE_BUSY or LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _write_batch(
    conn: sqlite3.Connection,
    ops: list[_Waiter],
    runs: dict[int, RunRow],
    tasks: dict[TaskKey, TaskRow],
    attempts: dict[AttemptKey, AttemptRow],
    logs: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    refused: list[tuple[str, tuple[Any, ...], Exception]] | None = None,
) -> None:
    """One batch as one transaction, on the connection's own thread. A rollback here needs
    no shield: nothing on the event loop can interrupt a function running in the thread.

    With *refused* (a list), rows go one by one and a row the database refuses (a constraint,
    a bad value: it never could be written) is left out and noted there, not the batch."""
    # IMMEDIATE takes the write lock now; a deferred BEGIN could hit SQLITE_BUSY at its first
    # write, halfway through the batch.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for waiter in ops:
            conn.execute("SAVEPOINT op")
            waiter.error = None  # an op tried again in a new batch
            try:
                assert waiter.op is not None
                waiter.value = waiter.op(conn)
            except Exception as exc:  # noqa: BLE001 - fails only this op's caller
                waiter.error = exc
                conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        for table, sql, rows in (
            ("run", schema.UPDATE_RUN, runs.values()),
            ("task", schema.UPSERT_TASK, tasks.values()),
            ("attempt", schema.UPSERT_ATTEMPT, attempts.values()),
            ("log", schema.INSERT_LOG, logs),
            ("event", schema.INSERT_EVENT, events),
        ):
            if not rows:
                continue
            if refused is None:
                conn.executemany(sql, rows)
                continue
            for row in rows:  # a failed statement undoes only itself
                try:
                    conn.execute(sql, row)
                except REFUSED as exc:  # others (locked, full, I/O): the batch is tried again
                    refused.append((table, row, exc))
        conn.execute("COMMIT")  # one fsync for the whole batch
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
