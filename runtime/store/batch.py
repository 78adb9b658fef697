"""One batch of the writer: what it carries, how it is written as one transaction on SQLite's
thread, and the bookkeeping of batches that fail."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from runtime.errors import StoreError
from runtime.states import RUN_TERMINAL, TASK_TERMINAL
from runtime.store import schema
from runtime.store.rows import AttemptKey, AttemptRow, RunRow, TaskKey, TaskRow

log = logging.getLogger("sluiceway.runtime.store")

# An op runs inside the batch's transaction, on the writer's thread, with the sqlite3
# connection: the whole batch is one hop to that thread.
Op = Callable[[sqlite3.Connection], Any]

# A failed batch is put back and tried again: at once while another connection holds the
# write lock for less than the busy timeout (SQLite's own busy wait, continued here in short
# steps that close() can stop), else after a delay doubling from RETRY_FIRST to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
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


class Waiter:
    """One caller waiting for its write (or everything before it) to be committed."""

    __slots__ = ("done", "error", "make", "op", "urgent", "value")

    def __init__(
        self,
        op: Op | None = None,
        *,
        urgent: bool | None = True,
        make: Callable[[], Op] | None = None,
    ) -> None:
        self.op = op
        self.make = make  # builds op when its batch is taken (Writer.put_op_from)
        # someone awaits it (put_op's are not awaited); None: not awaited, and it must be
        # committed with the rows queued before it (put_op_from)
        self.urgent = urgent
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


@dataclass(slots=True)
class Batch:
    """What one transaction writes: the ops in order, then the newest row of each key."""

    ops: list[Waiter] = field(default_factory=list)
    runs: dict[int, RunRow] = field(default_factory=dict)
    tasks: dict[TaskKey, TaskRow] = field(default_factory=dict)
    attempts: dict[AttemptKey, AttemptRow] = field(default_factory=dict)
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def has_rows(self) -> bool:
        return bool(self.runs or self.tasks or self.attempts or self.logs or self.events)


def build_ops(ops: list[Waiter]) -> None:
    """Build the ops queued as makers, now that their batch is taken (on the loop thread)."""
    for waiter in ops:
        if waiter.make is not None:
            waiter.op, waiter.make = waiter.make(), None


def describe_backlog(*queued: tuple[int, str]) -> str:
    """``1 run, 3 task rows, 20 log lines`` from (count, what) pairs; ``nothing``."""
    parts = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in queued if n]
    return ", ".join(parts) or "nothing"


Row = TypeVar("Row", TaskRow, AttemptRow)


def keep_row(old: Row, newer: Row | Callable[[], Row] | None) -> Row | Callable[[], Row]:
    """The row to queue again for a key: *old* from a failed batch, or *newer* queued since
    (it wins, unless *old* is terminal and it is not: a terminal state is final)."""
    if newer is None:
        return old
    if old.state in TASK_TERMINAL:
        built = newer if isinstance(newer, tuple) else newer()
        return built if built.state in TASK_TERMINAL else old
    return newer


def put_back_rows(
    batch: Batch,
    runs: dict[int, RunRow],
    tasks: dict[TaskKey, Any],
    attempts: dict[AttemptKey, Any],
) -> None:
    """Queue the rows of failed *batch* again into the writer's *runs*, *tasks* and
    *attempts*: a row queued since is newer and wins, unless the failed batch had the row's
    terminal state (final)."""
    for run_id, run in batch.runs.items():
        newer = runs.get(run_id)
        if newer is None or (run.state in RUN_TERMINAL and newer.state not in RUN_TERMINAL):
            runs[run_id] = run
    for task_key, task in batch.tasks.items():
        tasks[task_key] = keep_row(task, tasks.get(task_key))
    for attempt_key, attempt in batch.attempts.items():
        attempts[attempt_key] = keep_row(attempt, attempts.get(attempt_key))


Refused = list[tuple[str, tuple[Any, ...], Exception]]  # (table, row, why) of rows left out


def write_batch(conn: sqlite3.Connection, batch: Batch, refused: Refused | None = None) -> None:
    """*batch* as one transaction, on the connection's own thread. A rollback here needs no
    shield: nothing on the event loop can interrupt a function running in the thread.

    With *refused* (a list), rows go one by one and a row the database refuses (a constraint,
    a bad value: it never could be written) is left out and noted there, not the batch."""
    # IMMEDIATE takes the write lock now; a deferred BEGIN could hit SQLITE_BUSY at its first
    # write, halfway through the batch.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for waiter in batch.ops:
            _run_op(conn, waiter)
        for table, sql, rows in (
            ("run", schema.UPDATE_RUN, batch.runs.values()),
            ("task", schema.UPSERT_TASK, batch.tasks.values()),
            ("attempt", schema.UPSERT_ATTEMPT, batch.attempts.values()),
            ("log", schema.INSERT_LOG, batch.logs),
            ("event", schema.INSERT_EVENT, batch.events),
        ):
            if not rows:
                continue
            if refused is None:
                # bound as plain tuples: sqlite3 reads a tuple subclass (a NamedTuple row)
                # item by item through __getitem__, several times slower than copying it
                conn.executemany(sql, map(tuple, rows))
                continue
            for row in rows:  # a failed statement undoes only itself
                try:
                    conn.execute(sql, row)
                except REFUSED as exc:  # others (locked, full, I/O): the batch is tried again
                    refused.append((table, row, exc))
        if batch.logs:  # the new lines into the full-text index, set-wise (schema 10)
            for sql in schema.INDEX_LOGS:
                conn.execute(sql)
        conn.execute("COMMIT")  # one fsync for the whole batch
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _run_op(conn: sqlite3.Connection, waiter: Waiter) -> None:
    """One op under its own savepoint: an op that raises fails only its caller."""
    conn.execute("SAVEPOINT op")
    waiter.error = None  # an op tried again in a new batch
    try:
        assert waiter.op is not None
        waiter.value = waiter.op(conn)
    except Exception as exc:  # noqa: BLE001 - fails only this op's caller
        waiter.error = exc
        conn.execute("ROLLBACK TO op")
    conn.execute("RELEASE op")


def log_refused(path: str, refused: Refused) -> None:
    for table, row, error in refused:
        log.error(
            "store %s: the database refused a %s row, left out: %s: %s; row %r",
            path,
            table,
            type(error).__name__,
            error,
            row[:4],
        )


class Failures:
    """The writer's streak of failed batches: when to try again, and the *episode* within it,
    the part worth telling (logged once as it starts and once as it ends).

    A batch that failed because another connection holds the lock is tried again at once, for
    up to the busy timeout: that is SQLite's own busy wait, not yet an episode. Any other
    failure, or a longer wait, backs off and is one.
    """

    __slots__ = ("busy_timeout", "delay", "episode_since", "error", "path", "retry_at", "since")

    def __init__(self, busy_timeout: float, path: str) -> None:
        self.busy_timeout = busy_timeout
        self.path = path
        self.error: BaseException | None = None
        self.since: float | None = None  # when the streak began
        self.episode_since: float | None = None
        self.retry_at: float | None = None
        self.delay = 0.0

    @property
    def failing(self) -> str | None:
        """Why changes cannot be committed, during an episode (``None`` otherwise)."""
        if self.episode_since is None or self.error is None:
            return None
        return f"{type(self.error).__name__}: {self.error}"

    def describe(self) -> str:
        return f"{type(self.error).__name__}: {self.error}" if self.error else "no error"

    def failed(self, exc: Exception, now: float) -> bool:
        """Count a failed batch and set the next try; True when it is an episode (not a
        busy wait): whoever awaits an op is to be told, and :meth:`begin` the episode."""
        self.error = exc
        if self.since is None:
            self.since, self.delay = now, 0.0
        if _busy(exc) and now - self.since < self.busy_timeout:
            self.retry_at = now  # another connection holds the lock: SQLite's busy wait
            return False
        self.delay = min(RETRY_MAX, max(RETRY_FIRST, self.delay * 2))
        self.retry_at = now + self.delay
        return True

    def begin(self, backlog: str) -> bool:
        """Start the episode, logged with the *backlog* kept in memory, unless one is on;
        True when this started it."""
        if self.episode_since is not None:
            return False
        self.episode_since = self.since
        log.error(
            "store %s: cannot commit (%s); %s, retried every %gs at most until it can",
            self.path,
            self.describe(),
            "nothing queued" if backlog == "nothing" else f"{backlog} kept in memory",
            RETRY_MAX,
        )
        return True

    def recovered(self, now: float) -> bool:
        """End the streak; True when it ended an episode (logged)."""
        episode = self.episode_since
        self.error = self.since = self.episode_since = self.retry_at = None
        self.delay = 0.0
        if episode is None:
            return False
        log.warning(
            "store %s: committing again after %.1fs; nothing kept in memory was lost",
            self.path,
            now - episode,
        )
        return True


def _busy(exc: Exception) -> bool:
    """Whether *exc* says another connection holds the database (SQLITE_BUSY or LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
