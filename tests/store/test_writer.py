"""The one writer: group commit, durability on flush and close, idempotent run creation,
final terminal states, isolated ops, and cancellation that never wedges the connection."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from runtime.errors import StoreError
from runtime.store import Store, open_store
from runtime.store.batch import Op, Waiter
from runtime.store.rows import RunRow
from tests.store.rows import at, attempt_row, create_run, log_row, new_run, peek, task_row
from tests.waiting import WAIT


async def test_many_puts_commit_in_one_batch(db_path: Path) -> None:
    # an interval longer than the test: only the flush commits, however slow the machine
    async with open_store(db_path, interval=60.0) as store:
        run_id = await new_run(store)
        before = store.writer.batches
        for i in range(500):
            store.put_task(task_row(run_id, f"t{i}", "running"))
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()  # the writer gets the chance to run
        await store.flush()
        batches = store.writer.batches - before
    assert batches == 1, f"{batches} transactions for 500 state changes"
    assert peek(db_path, "SELECT COUNT(*) FROM tasks") == [(500,)]


async def test_changes_to_one_row_within_a_batch_are_written_once(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "t", "pending", attempts=0))
        store.put_task(task_row(run_id, "t", "running"))
        store.put_task(task_row(run_id, "t", "succeeded", ended_at=at(1), result=b"7"))
        await store.flush()
        rows = peek(db_path, "SELECT name, state, attempts, result FROM tasks")
    assert rows == [("t", "succeeded", 1, b"7")]


async def test_flush_makes_every_kind_of_change_durable(db_path: Path) -> None:
    async with open_store(db_path, interval=5.0) as store:  # nothing commits unless asked
        run_id = await new_run(store)
        store.put_run(RunRow(run_id, "running", at(0)))
        store.put_task(task_row(run_id, "load", "failed", ended_at=at(2), error="E: x"))
        store.put_attempt(attempt_row(run_id, "load", 1, "failed", error="x"))
        store.add_log(log_row(run_id, "load", "hello"))
        store.add_event((at(2), "task_ended", run_id, "load", "{}"))
        assert peek(db_path, "SELECT COUNT(*) FROM tasks") == [(0,)]
        await store.flush()
        # read back on another connection while the store is still open
        assert peek(db_path, "SELECT state, started_at FROM runs") == [("running", at(0))]
        assert peek(db_path, "SELECT name, state, error FROM tasks") == [("load", "failed", "E: x")]
        assert peek(db_path, "SELECT attempt, error_type FROM attempts") == [(1, "ValueError")]
        assert peek(db_path, "SELECT message FROM logs") == [("hello",)]
        assert peek(db_path, "SELECT kind, task FROM events") == [("task_ended", "load")]


async def test_close_commits_what_is_queued(db_path: Path) -> None:
    async with open_store(db_path, interval=5.0) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "t", "succeeded", ended_at=at(1)))
        store.add_log(log_row(run_id, "t", "last words"))
    assert peek(db_path, "SELECT state FROM tasks") == [("succeeded",)]
    assert peek(db_path, "SELECT message FROM logs") == [("last words",)]


async def test_create_run_with_the_same_key_returns_the_first_run(db_path: Path) -> None:
    async with open_store(db_path) as store:
        first = await create_run(store, "f", "2026-01-02", params={"a": 1})
        second = await create_run(store, "f", "2026-01-02", params={"a": 2})
        other_flow = await new_run(store, flow="g", key="2026-01-02")
        no_key = [await new_run(store), await new_run(store)]
    assert first[1] is True
    assert second == (first[0], False)
    assert other_flow != first[0]
    assert no_key[0] != no_key[1]
    assert peek(db_path, "SELECT params FROM runs WHERE id = ?", (first[0],)) == [('{"a":1}',)]
    assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(4,)]


async def test_racing_create_runs_with_one_key_make_one_run(db_path: Path) -> None:
    got: list[tuple[int, bool]] = []

    async with open_store(db_path) as store:

        async def create() -> None:
            got.append(await create_run(store, "f", "tick-1", trigger={"kind": "cron"}))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(create)
    assert len(got) == 10
    assert len({run_id for run_id, _ in got}) == 1
    assert sorted(created for _, created in got) == [False] * 9 + [True]
    assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(1,)]


async def test_racing_create_runs_from_two_stores_make_one_run(db_path: Path) -> None:
    """Two processes (here: two writers on one file) behind the same trigger."""
    got: list[tuple[int, bool]] = []
    async with open_store(db_path) as one, open_store(db_path) as two:

        async def create(store: Store) -> None:
            got.append(await create_run(store, "f", "inbox/a.csv", trigger={"kind": "file"}))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(create, one if i % 2 else two)
    assert len({run_id for run_id, _ in got}) == 1
    assert sorted(created for _, created in got) == [False] * 5 + [True]


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "upstream_failed", "skipped"])
@pytest.mark.parametrize("same_batch", [False, True], ids=["later-batch", "same-batch"])
async def test_terminal_task_state_is_never_overwritten(
    db_path: Path, terminal: str, same_batch: bool
) -> None:
    async with open_store(db_path, interval=5.0) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "t", terminal, ended_at=at(1), reason="final"))
        store.put_attempt(attempt_row(run_id, "t", 1, terminal))
        if not same_batch:
            await store.flush()
        store.put_task(task_row(run_id, "t", "running", attempts=2))
        store.put_task(task_row(run_id, "t", "cancelled", attempts=2, reason="late"))
        store.put_attempt(attempt_row(run_id, "t", 1, "running"))
        await store.flush()
        assert peek(db_path, "SELECT state, attempts, reason FROM tasks") == [
            (terminal, 1, "final")
        ]
        assert peek(db_path, "SELECT state FROM attempts") == [(terminal,)]


@pytest.mark.parametrize("same_batch", [False, True], ids=["later-batch", "same-batch"])
async def test_terminal_run_state_is_never_overwritten(db_path: Path, same_batch: bool) -> None:
    async with open_store(db_path, interval=5.0) as store:
        run_id = await new_run(store)
        store.put_run(RunRow(run_id, "failed", at(0), at(3), "failed tasks: t"))
        if not same_batch:
            await store.flush()
        store.put_run(RunRow(run_id, "running", at(0)))
        store.put_run(RunRow(run_id, "succeeded", at(0), at(9)))
        await store.flush()
        assert peek(db_path, "SELECT state, ended_at, error FROM runs") == [
            ("failed", at(3), "failed tasks: t")
        ]


async def test_a_failing_op_rolls_back_only_itself(db_path: Path) -> None:
    def bad_python(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('bad1', 'x')")
        raise ValueError("op broke after writing")

    def bad_sql(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('bad2', 'x')")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    def good(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('good', 'x')")
        return "ok"

    outcome: dict[str, object] = {}

    async def call(name: str, op: Op) -> None:
        try:
            outcome[name] = await store.writer.submit(op)
        except StoreError as exc:
            outcome[name] = exc

    async with open_store(db_path) as store:
        run_id = await new_run(store)
        before = store.writer.batches
        store.put_task(task_row(run_id, "t", "running"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "bad_python", bad_python)
            tg.start_soon(call, "good", good)
            tg.start_soon(call, "bad_sql", bad_sql)
        assert store.writer.batches - before == 1  # all three ops shared one transaction
    assert outcome["good"] == "ok"
    assert isinstance(outcome["bad_python"], StoreError)
    assert "op broke after writing" in str(outcome["bad_python"])
    assert isinstance(outcome["bad_sql"], StoreError)
    assert "no_such_table" in str(outcome["bad_sql"])
    assert peek(db_path, "SELECT name FROM flows") == [("good",)]
    assert peek(db_path, "SELECT state FROM tasks") == [("running",)]


async def test_a_cancelled_flush_leaves_the_writer_usable(db_path: Path) -> None:
    async with open_store(db_path, interval=5.0) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "a", "running"))
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.flush()  # cancelled while its batch is pending
        assert scope.cancelled_caught
        # the connection is not left inside a transaction: the next batch commits
        again = await new_run(store)
        store.put_task(task_row(again, "b", "running"))
        with anyio.fail_after(WAIT):
            await store.flush()
    assert peek(db_path, "SELECT name FROM tasks ORDER BY name") == [("a",), ("b",)]


async def test_cancelling_the_store_with_a_batch_pending_commits_it_on_close(
    db_path: Path,
) -> None:
    with anyio.fail_after(WAIT), anyio.CancelScope() as scope:
        async with open_store(db_path, interval=5.0) as store:
            run_id = await new_run(store)
            for i in range(20):
                store.put_task(task_row(run_id, f"t{i}", "cancelled"))
            scope.cancel()  # like a service stop: the writer task is cancelled too
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert peek(db_path, "SELECT COUNT(*) FROM tasks") == [(20,)]
    _assert_unlocked(db_path)


async def test_cancelling_the_store_during_a_batch_commits_it_on_close(db_path: Path) -> None:
    in_batch, release = threading.Event(), threading.Event()

    def slow_op(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('slow', 'x')")
        in_batch.set()
        release.wait(5)  # the batch's transaction is open here, on the writer's thread

    with anyio.fail_after(WAIT), anyio.CancelScope() as scope:
        async with open_store(db_path) as store, anyio.create_task_group() as tg:
            run_id = await new_run(store)
            store.put_task(task_row(run_id, "t", "running"))
            tg.start_soon(store.writer.submit, slow_op)
            await anyio.to_thread.run_sync(in_batch.wait, 5)
            store.put_task(task_row(run_id, "u", "running"))  # queued for the next batch
            scope.cancel()
            release.set()
            await anyio.sleep_forever()
    assert peek(db_path, "SELECT name FROM flows") == [("slow",)]
    assert peek(db_path, "SELECT name FROM tasks ORDER BY name") == [("t",), ("u",)]
    _assert_unlocked(db_path)
    async with open_store(db_path) as store:  # and the file takes new writes
        await new_run(store)
    assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(2,)]


async def test_writes_after_close_are_refused(db_path: Path) -> None:
    async with open_store(db_path) as store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await new_run(store)


def _assert_unlocked(path: Path) -> None:
    """No connection still holds the write lock: another one can take it at once."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_awaited_ops_never_starve_the_queued_rows(db_path: Path) -> None:
    # awaited ops commit without the queued rows, but the rows go with the first batch that
    # begins an interval after they were first held back, even when ops never stop coming
    # (a service creating runs back to back)
    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('f', 'x') ON CONFLICT DO NOTHING")

    interval = 0.05
    async with open_store(db_path, interval=interval) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "t", "running"))
        start, longest = anyio.current_time(), 0.0
        with anyio.fail_after(WAIT):
            while True:
                began = anyio.current_time()
                if peek(db_path, "SELECT COUNT(*) FROM tasks")[0][0]:
                    break
                await store.writer.submit(op)  # one batch: a commit with an fsync
                longest = max(longest, anyio.current_time() - began)
        waited = anyio.current_time() - start
    # the interval, plus the batch under way when it ended and the one after it (and the
    # read): measured in this run's own batches, so that a slow disk or a loaded machine
    # does not fail it, and a row kept back for many intervals does
    assert waited <= interval + 4 * longest, (
        f"the row waited {waited:.3f}s behind a stream of ops ({longest:.3f}s per batch)"
    )


async def test_close_commits_the_rows_even_beside_an_awaited_op(db_path: Path) -> None:
    # at shutdown an awaited op can still be queued (its caller was cancelled: a scheduler
    # pass cut short by SIGTERM); close() must not commit it alone and drop the rows
    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO flows (name, updated_at) VALUES ('f', 'x')")

    async with open_store(db_path, interval=5) as store:
        run_id = await new_run(store)
        store.put_task(task_row(run_id, "t", "succeeded", ended_at=at(1)))
        store.writer._ops.append(Waiter(op))  # queued as submit() does, writer not woken
    assert peek(db_path, "SELECT name, state FROM tasks") == [("t", "succeeded")]
    assert peek(db_path, "SELECT name FROM flows") == [("f",)]
