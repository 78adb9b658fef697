"""A batch that cannot be committed is kept, not thrown away: a real second connection holding
the write lock past the busy timeout, a database that is full (SQLite's own page limit, and a
real full tmpfs where the test may mount one), a row the schema refuses, and close() giving up
only after its budget, saying what it lost."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import StoreError
from runtime.store import Store, open_store
from runtime.store.rows import RunRow
from tests.store.rows import at, attempt_row, log_row, new_run, peek, task_row

DEADLINE = 20.0  # generous: the machine is shared


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int, text: str) -> list[str]:
        return [
            r.getMessage() for r in self.records if r.levelno == level and text in r.getMessage()
        ]


@pytest.fixture
def store_log() -> Iterator[_Records]:
    """The store logger's records (a handler of its own: the CLI's setup stops propagation)."""
    logger = logging.getLogger("sluiceway.runtime.store")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the write lock until exit."""
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def until(check: Callable[[], Any], what: str, within: float = DEADLINE) -> None:
    """Poll *check* on the event loop until it is truthy (bounded by *within* seconds)."""
    deadline = anyio.current_time() + within
    while not check():
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await anyio.sleep(0.01)


def queue_a_run(store: Store, run_id: int, *, lines: int = 3, size: int = 10) -> None:
    """What the engine queues for a two-task run: run, task, attempt rows, logs, an event."""
    store.put_run(RunRow(run_id, "running", at(0)))
    store.put_task(task_row(run_id, "extract", "running"))
    store.put_attempt(attempt_row(run_id, "extract", 1, "running"))
    store.put_task(task_row(run_id, "load", "pending", attempts=0))
    for i in range(lines):
        store.add_log(log_row(run_id, "extract", f"line {i} " + "x" * size))
    store.add_event((at(1), "task_started", run_id, "extract", "{}"))


def finish_the_run(store: Store, run_id: int) -> None:
    store.put_task(task_row(run_id, "extract", "succeeded", ended_at=at(2), result=b"1"))
    store.put_attempt(attempt_row(run_id, "extract", 1, "succeeded"))
    store.put_task(task_row(run_id, "load", "succeeded", ended_at=at(3)))
    store.put_attempt(attempt_row(run_id, "load", 1, "succeeded"))
    store.put_run(RunRow(run_id, "succeeded", at(0), at(3)))


def assert_the_run_landed(path: Path, run_id: int, lines: int) -> None:
    assert peek(path, "SELECT state, ended_at FROM runs WHERE id = ?", (run_id,)) == [
        ("succeeded", at(3))
    ]
    assert peek(path, "SELECT name, state FROM tasks ORDER BY name") == [
        ("extract", "succeeded"),
        ("load", "succeeded"),
    ]
    assert peek(path, "SELECT name, attempt, state FROM attempts ORDER BY name") == [
        ("extract", 1, "succeeded"),
        ("load", 1, "succeeded"),
    ]
    got = [m for (m,) in peek(path, "SELECT message FROM logs ORDER BY id")]
    assert [m.split(" x")[0].rstrip("x ") for m in got] == [f"line {i}" for i in range(lines)]
    assert peek(path, "SELECT kind, task FROM events") == [("task_started", "extract")]


@pytest.mark.slow
async def test_a_lock_held_past_the_busy_timeout_delays_every_row_and_loses_none(
    db_path: Path, store_log: _Records
) -> None:
    async with open_store(db_path, interval=0.01, busy_timeout=0.2) as store:
        run_id = await new_run(store)
        other = await new_run(store)
        with write_lock(db_path):
            queue_a_run(store, run_id)
            flushed = anyio.Event()

            async def flush() -> None:
                await store.flush()
                flushed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(flush)
                # past the busy timeout the writer says it cannot commit, once
                await until(lambda: store.writer.failing is not None, "the store failing")
                assert "database is locked" in (store.writer.failing or "")
                before = store.writer.failed_batches
                await until(lambda: store.writer.failed_batches >= before + 3, "more retries")
                # meanwhile the run goes on: newer states of the same rows are queued
                finish_the_run(store, run_id)
                # a terminal state in the failed batch stays final against a later change
                store.put_run(RunRow(other, "failed", at(0), at(1), "failed tasks: t"))
                await until(lambda: store.writer.failed_batches >= before + 5, "more retries")
                store.put_run(RunRow(other, "running", at(0)))
                assert not flushed.is_set()  # no one is told it is committed
                assert peek(db_path, "SELECT COUNT(*) FROM tasks") == [(0,)]
                # the lock is released at the end of the with block
                tg.cancel_scope.cancel()
        with anyio.fail_after(DEADLINE):
            await store.flush()
        assert store.writer.failing is None
        assert_the_run_landed(db_path, run_id, lines=3)
        assert peek(db_path, "SELECT state FROM runs WHERE id = ?", (other,)) == [("failed",)]
    failing = store_log.lines(logging.ERROR, "cannot commit")
    assert len(failing) == 1, store_log.records
    assert str(db_path) in failing[0]
    assert "database is locked" in failing[0]
    assert len(store_log.lines(logging.WARNING, "committing again")) == 1
    assert store_log.lines(logging.ERROR, "lost") == []


async def test_a_lock_held_shorter_than_the_busy_timeout_is_waited_out_silently(
    db_path: Path, store_log: _Records
) -> None:
    async with open_store(db_path, interval=0.01, busy_timeout=30) as store:
        run_id = await new_run(store)
        with write_lock(db_path):
            queue_a_run(store, run_id)
            await until(lambda: store.writer.failed_batches >= 3, "the lock being hit")
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.2):
                    await store.flush()
        with anyio.fail_after(DEADLINE):
            await store.flush()
        assert peek(db_path, "SELECT COUNT(*) FROM logs") == [(3,)]
    assert store.writer.failing is None
    assert store_log.lines(logging.ERROR, "") == []
    assert store_log.lines(logging.WARNING, "") == []


async def test_an_awaited_write_fails_to_its_caller_once_the_lock_outlasts_the_busy_timeout(
    db_path: Path,
) -> None:
    async with open_store(db_path, interval=0.01, busy_timeout=0.2) as store:
        run_id = await new_run(store)
        with write_lock(db_path):
            store.put_task(task_row(run_id, "t", "running"))
            with anyio.fail_after(DEADLINE), pytest.raises(StoreError, match="database is locked"):
                await new_run(store)  # as before: told after the busy timeout
        with anyio.fail_after(DEADLINE):
            await store.flush()
        # the queued row was kept; the run the caller was told about was not made
        assert peek(db_path, "SELECT name, state FROM tasks") == [("t", "running")]
        assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(1,)]


async def _fill_until_freed(
    db_path: Path, store: Store, fill: Callable[[], Any], free: Callable[[], Any], lines: int
) -> None:
    """Queue a run while the disk is full; nothing lands and no flush returns until *free*."""
    run_id = await new_run(store)
    await store.flush()
    await fill()
    queue_a_run(store, run_id, lines=lines, size=1000)
    finish_the_run(store, run_id)
    flushed = anyio.Event()

    async def flush() -> None:
        await store.flush()
        flushed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(flush)
        await until(lambda: store.writer.failing is not None, "the store failing")
        assert "full" in (store.writer.failing or ""), store.writer.failing
        before = store.writer.failed_batches
        await until(lambda: store.writer.failed_batches >= before + 2, "more retries")
        assert not flushed.is_set()
        assert peek(db_path, "SELECT COUNT(*) FROM logs") == [(0,)]
        assert peek(db_path, "SELECT state FROM runs WHERE id = ?", (run_id,)) == [("queued",)]
        await free()
        with anyio.fail_after(DEADLINE):
            await flushed.wait()
    assert store.writer.failing is None
    assert_the_run_landed(db_path, run_id, lines=lines)


async def test_a_full_database_keeps_the_rows_until_there_is_room(
    db_path: Path, store_log: _Records
) -> None:
    # SQLite's own limit on the file's pages: the same SQLITE_FULL a full disk gives
    async with open_store(db_path, interval=0.01) as store:
        db = store.writer._db

        async def fill() -> None:
            async with db.execute("PRAGMA page_count") as cur:
                row = await cur.fetchone()
            assert row is not None
            await db.execute(f"PRAGMA max_page_count={row[0]}")

        async def free() -> None:
            await db.execute("PRAGMA max_page_count=1073741823")

        await _fill_until_freed(db_path, store, fill, free, lines=200)
    failing = store_log.lines(logging.ERROR, "cannot commit")
    assert len(failing) == 1, store_log.records
    assert "database or disk is full" in failing[0]
    assert len(store_log.lines(logging.WARNING, "committing again")) == 1


@contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of *size* mounted on *folder*; skips the test where mounting is not allowed."""
    folder.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:  # no mount command
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def fill_disk(folder: Path) -> Path:
    """Write a file in *folder* until the file system is full; returns it (delete to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    error: OSError | None = None
    try:
        while error is None:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                error = exc
    finally:
        os.close(fd)
    assert error.errno == errno.ENOSPC, error
    return filler


@pytest.mark.slow
async def test_a_full_disk_keeps_the_rows_until_space_is_freed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        db_path = disk / "sluiceway.db"
        filler = disk / "filler"

        async def fill() -> None:
            fill_disk(disk)

        async def free() -> None:
            filler.unlink()

        async with open_store(db_path, interval=0.01) as store:
            await _fill_until_freed(db_path, store, fill, free, lines=400)


@pytest.mark.parametrize("how", ["budget", "abandon"])
async def test_close_gives_up_after_its_budget_or_when_abandoned_and_says_what_is_lost(
    db_path: Path, store_log: _Records, how: str
) -> None:
    budget = 0.5 if how == "budget" else 600.0
    other = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    opened: list[Store] = []

    async def abandon_once_closing() -> None:
        await until(lambda: opened and opened[0].writer._closed, "close() to begin")
        writer = opened[0].writer
        tried = writer.failed_batches
        await until(lambda: writer.failed_batches > tried, "close() to retry")
        writer.abandon()  # the CLI's second Ctrl-C

    try:
        async with anyio.create_task_group() as tg:
            if how == "abandon":
                tg.start_soon(abandon_once_closing)
            with pytest.raises(StoreError) as info:  # noqa: PT012 - raised by the exit
                async with open_store(db_path, interval=0.01, commit_timeout=budget) as store:
                    opened.append(store)
                    run_id = await new_run(store)
                    other.execute("BEGIN IMMEDIATE")
                    queue_a_run(store, run_id, lines=5)
                    began = anyio.current_time()
            took = anyio.current_time() - began
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    text = str(info.value)
    assert text.startswith(f"{db_path}: could not commit 1 run row, 2 task rows, 1 attempt row, "
                           "5 log lines, 1 event (OperationalError: database is locked; ")  # fmt: skip
    assert text.endswith("gave up after 0.5s): that history is lost" if how == "budget" else
                         "given up): that history is lost")  # fmt: skip
    # bounded by the budget, not by SQLite's busy timeout (10 s here)
    assert took < (5.0 if how == "budget" else DEADLINE), took
    if how == "budget":
        assert took >= 0.5
    assert peek(db_path, "SELECT COUNT(*) FROM logs") == [(0,)]
    assert store_log.lines(logging.ERROR, "could not commit") == []  # raised: the caller says it
    warned = store_log.lines(logging.WARNING, "not committed yet")
    assert len(warned) == 1
    assert f"retrying for up to {budget:g}s before giving up" in warned[0]


async def test_a_loss_behind_the_callers_own_error_is_logged(
    db_path: Path, store_log: _Records
) -> None:
    other = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    try:
        with anyio.CancelScope() as scope:  # like a service stop: the caller is cancelled
            async with open_store(db_path, interval=0.01, commit_timeout=0.2) as store:
                run_id = await new_run(store)
                other.execute("BEGIN IMMEDIATE")
                store.put_task(task_row(run_id, "t", "cancelled"))
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught  # the cancellation went on, not the store's error
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    lost = store_log.lines(logging.ERROR, "could not commit")
    assert len(lost) == 1
    assert lost[0].startswith(f"store: {db_path}: could not commit 1 task row (")


async def test_a_row_the_schema_refuses_is_left_out_loudly_and_the_others_land(
    db_path: Path, store_log: _Records
) -> None:
    async with open_store(db_path, interval=0.01) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "fine", "running"))
        store.put_task(task_row(run_id + 99, "orphan", "running"))  # no such run: a foreign key
        store.add_log(log_row(run_id, "fine", "kept"))
        with anyio.fail_after(DEADLINE):
            await store.flush()
        assert store.writer.failing is None
        store.put_task(task_row(run_id, "after", "running"))  # and the writer goes on
        await store.flush()
    assert peek(db_path, "SELECT name FROM tasks ORDER BY name") == [("after",), ("fine",)]
    assert peek(db_path, "SELECT message FROM logs") == [("kept",)]
    refused = store_log.lines(logging.ERROR, "refused")
    assert len(refused) == 1, store_log.records
    assert "task row" in refused[0]
    assert "FOREIGN KEY" in refused[0]
    assert "orphan" in refused[0]
