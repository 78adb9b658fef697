"""The files source as the service runs it: start-up (reconcile, scan, claim), run ends
settled, re-binding, one bad trigger beside good ones; a real folder, store and bus."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from plugins.triggers.files import FilesSource
from runtime import codec
from runtime.engine.events import RunEnded
from runtime.states import RunState
from runtime.store import open_store
from tests.plugins.triggers.files_host import AT, Host, binding, make_flow

MOVES = {"stable_for": "0s", "on_success": "move:done", "on_failure": "move:failed"}


def _rows(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _old(path: Path, text: str = "a\n") -> Path:
    """A file written before the watch starts: complete at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@asynccontextmanager
async def serving(host: Host, *bindings: Any) -> AsyncIterator[FilesSource]:
    """The source running in a task group, started (its start-up scan claimed)."""
    source = FilesSource(host)
    source.bind(list(bindings))
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()


async def _end(host: Host, run_id: int, state: RunState, *, publish: bool = True) -> None:
    """The run ends as the engine records and announces it."""
    await host.store.writer.submit(
        lambda db: db.execute(
            "UPDATE runs SET state = ?, ended_at = ? WHERE id = ?",
            (str(state), codec.iso(host.now()), run_id),
        )
    )
    if publish:
        host.bus.publish(RunEnded(host.now(), run_id, "ingest", state))


async def _settled(db_path: Path, count: int) -> list[tuple[Any, ...]]:
    with anyio.fail_after(10):
        while True:
            rows = _rows(
                db_path,
                "SELECT path, outcome, moved_to FROM file_claims WHERE settled_at IS NOT NULL "
                "ORDER BY id",
            )
            if len(rows) >= count:
                return rows
            await anyio.sleep(0.02)


async def _claims(db_path: Path, count: int) -> None:
    with anyio.fail_after(10):
        while len(_rows(db_path, "SELECT id FROM file_claims")) < count:  # noqa: ASYNC110 - a row
            await anyio.sleep(0.05)


async def test_files_present_at_start_are_claimed_before_started(
    db_path: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    for name in ("a.csv", "b.csv", ".hidden.csv", "c.csv.part"):
        _old(inbox / name)
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        async with serving(host, binding(inbox, pattern="*.csv", **MOVES)):
            # started() came after the claims: nothing to wait for
            rows = _rows(db_path, "SELECT path FROM file_claims ORDER BY path")
            assert rows == [(str(inbox / "a.csv"),), (str(inbox / "b.csv"),)]
            assert len(_rows(db_path, "SELECT id FROM runs WHERE state = 'queued'")) == 2
    assert host.reports == []


async def test_run_ends_move_the_file(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _old(inbox / "good.csv")
    _old(inbox / "bad.csv")
    _old(tmp_path / "failed" / "bad.csv", "an older failure\n")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        async with serving(host, binding(inbox, **MOVES)):
            runs = dict(_rows(db_path, "SELECT path, run_id FROM file_claims"))
            await _end(host, runs[str(inbox / "good.csv")], RunState.SUCCEEDED)
            await _end(host, runs[str(inbox / "bad.csv")], RunState.FAILED)
            rows = await _settled(db_path, 2)
    assert sorted(rows) == [
        (str(inbox / "bad.csv"), "moved", str(tmp_path / "failed" / "bad.1.csv")),
        (str(inbox / "good.csv"), "moved", str(tmp_path / "done" / "good.csv")),
    ]
    assert (tmp_path / "failed" / "bad.csv").read_text() == "an older failure\n"
    assert list(inbox.iterdir()) == []


async def test_runs_that_ended_while_down_are_settled_at_start(
    db_path: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    _old(inbox / "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        async with serving(host, binding(inbox, **MOVES)):
            (run_id,) = [r[0] for r in _rows(db_path, "SELECT run_id FROM file_claims")]
    async with open_store(db_path) as store:  # the run ends with nobody listening
        host = Host(store, make_flow(), epoch=2)
        await _end(host, run_id, RunState.SUCCEEDED, publish=False)
    async with open_store(db_path) as store:
        host = Host(store, make_flow(), epoch=3)
        async with serving(host, binding(inbox, **MOVES)):
            rows = _rows(db_path, "SELECT outcome, moved_to FROM file_claims")
    assert rows == [("moved", str(tmp_path / "done" / "a.csv"))]
    assert len(_rows(db_path, "SELECT id FROM runs")) == 1  # not claimed again


async def test_a_fresh_end_of_another_process_is_left_to_it(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _old(inbox / "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow(), epoch=await store.start_epoch(AT))
        async with serving(host, binding(inbox, **MOVES)) as source:
            (run_id,) = [r[0] for r in _rows(db_path, "SELECT run_id FROM file_claims")]
            # `run --file` in another process ran it and settles it itself
            other = await store.start_epoch(AT)
            await store.writer.submit(lambda db: db.execute("UPDATE runs SET epoch = ?", (other,)))
            await _end(host, run_id, RunState.SUCCEEDED, publish=False)
            assert await source.settler.reconcile() == 0
            host.clock = AT + timedelta(minutes=2)  # that process did not: this one does
            assert await source.settler.reconcile() == 1
    assert (tmp_path / "done" / "a.csv").exists()


async def test_a_missing_folder_does_not_stop_the_other_trigger(
    db_path: Path, tmp_path: Path
) -> None:
    good, missing = tmp_path / "good", tmp_path / "missing"
    _old(good / "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        async with serving(host, binding(missing, **MOVES), binding(good, **MOVES)):
            assert len(_rows(db_path, "SELECT id FROM file_claims")) == 1
            missing.mkdir()
            _old(missing / "late.csv")
            await _claims(db_path, 2)
    assert any(str(missing) in r for r in host.reports), host.reports


async def test_a_rebind_keeps_what_was_claimed(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _old(inbox / "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        first = binding(inbox, **MOVES)
        async with serving(host, first) as source:
            before = store.writer.batches
            source.bind([binding(inbox, **{**MOVES, "on_success": "delete"})])
            source.bind([first])  # a reload back and forth: rescans, claims nothing new
            _old(inbox / "b.csv")
            await _claims(db_path, 2)
            assert store.writer.batches - before <= 2
    assert len(_rows(db_path, "SELECT id FROM runs")) == 2


async def test_a_run_of_a_dead_process_is_settled_at_once(db_path: Path, tmp_path: Path) -> None:
    # `run --file` killed between its run's end and the move: nobody else will move it
    inbox = tmp_path / "inbox"
    _old(inbox / "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow(), epoch=await store.start_epoch(AT))
        async with serving(host, binding(inbox, **MOVES)) as source:
            (run_id,) = [r[0] for r in _rows(db_path, "SELECT run_id FROM file_claims")]

            def dead_owner(db: sqlite3.Connection) -> None:
                db.execute(
                    "INSERT INTO epochs (id, pid, boot_id, proc_start, started_at) "
                    "VALUES (99, 999999, NULL, 'not-a-start-time', ?)",
                    (codec.iso(AT),),
                )
                db.execute("UPDATE runs SET epoch = 99")

            await store.writer.submit(dead_owner)
            await _end(host, run_id, RunState.SUCCEEDED, publish=False)
            assert await source.settler.reconcile() == 1  # no grace: its owner is gone
    assert (tmp_path / "done" / "a.csv").exists()


async def test_a_failed_move_is_recorded_and_reported_and_the_source_goes_on(
    db_path: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    _old(inbox / "a.csv")
    (tmp_path / "blocked").write_text("a file where the done folder should be")
    moves = {**MOVES, "on_success": "move:blocked/done"}
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        async with serving(host, binding(inbox, **moves)):
            (run_id,) = [r[0] for r in _rows(db_path, "SELECT run_id FROM file_claims")]
            await _end(host, run_id, RunState.SUCCEEDED)
            (row,) = await _settled(db_path, 1)
            _old(inbox / "b.csv")  # the source still claims
            await _claims(db_path, 2)
    assert row == (str(inbox / "a.csv"), "failed", None)
    (error,) = _rows(db_path, "SELECT settle_error FROM file_claims WHERE outcome = 'failed'")
    assert str(tmp_path / "blocked" / "done") in error[0]
    assert (inbox / "a.csv").exists()
    assert len(host.reports) == 1
    assert f"run {run_id}: {inbox / 'a.csv'}: cannot move to" in host.reports[0]
