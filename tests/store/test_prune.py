"""Retention: what pruning deletes with a run, what it keeps and why, in chunks; the service's
feeder on an injected clock; ``sluiceway prune`` in process."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from runtime.clock import FakeClock
from runtime.config import HistoryConfig
from runtime.service.retention import run_retention
from runtime.store import open_store, schema
from runtime.store.prune import Pruned, _next_chunk, count_prunable, prune_history
from tests.cli_helpers import main_output
from tests.waiting import wait_until

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OLD = "2026-10-01T00:00:00Z"  # two months before NOW
RECENT = "2026-11-30T11:00:00Z"


def runs_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Scene:
    """A history written straight into a migrated database, one run per case."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys=ON")

    def run(self, state: str, ended: str | None, *, retry_of: int | None = None) -> int:
        (run_id,) = self.conn.execute(
            "INSERT INTO runs (flow, state, logical_date, created_at, ended_at, retry_of) "
            "VALUES ('etl', ?, ?, ?, ?, ?) RETURNING id",
            (state, OLD, OLD, ended, retry_of),
        ).fetchone()
        self.conn.execute(
            "INSERT INTO tasks (run_id, name, state, attempts) VALUES (?, 'load', ?, 1)",
            (run_id, "succeeded" if state == "succeeded" else "failed"),
        )
        self.conn.execute(
            "INSERT INTO attempts (run_id, name, idx, attempt, state) VALUES (?, 'load', -1, 1, ?)",
            (run_id, "failed"),
        )
        self.conn.executemany(
            "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) "
            "VALUES (?, 'load', -1, 1, ?, 'INFO', ?)",
            [(run_id, OLD, f"line {n} of run {run_id} warehouse") for n in range(3)],
        )
        for sql in schema.INDEX_LOGS:  # as the writer's batch does
            self.conn.execute(sql)
        self.conn.execute(
            "INSERT INTO events (ts, kind, run_id, task) VALUES (?, 'task.failed', ?, 'load')",
            (OLD, run_id),
        )
        self.conn.execute(
            "INSERT INTO checks (run_id, task, idx, attempt, ts, name, passed, severity) "
            "VALUES (?, 'load', -1, 1, ?, 'rows', 1, 'error')",
            (run_id, OLD),
        )
        for alert in ("delivered", "pending"):
            self.conn.execute(
                "INSERT INTO outbox (created_at, event, kind, flow, run_id, destination, state, "
                "next_at, payload) VALUES (?, 'run.failed', 'run', 'etl', ?, 'slack:x', ?, 0, "
                "'{}')",
                (OLD, run_id, alert),
            )
        return int(run_id)

    def claim(self, run_id: int, outcome: str | None) -> None:
        self.conn.execute(
            "INSERT INTO file_claims (flow, trigger, path, size, mtime_ns, run_id, claimed_at, "
            "settled_at, outcome) VALUES ('etl', 't', ?, 1, 1, ?, ?, ?, ?)",
            (f"/in/{run_id}.csv", run_id, OLD, OLD if outcome else None, outcome),
        )

    def count(self, sql: str, *args: Any) -> Any:
        return self.conn.execute(sql, args).fetchone()[0]


@pytest.fixture
async def scene(db_path: Path) -> Scene:
    async with open_store(db_path):
        pass  # migrated
    return Scene(db_path)


async def test_prune_deletes_old_runs_with_their_rows_and_keeps_what_is_needed(
    scene: Scene, db_path: Path
) -> None:
    old = scene.run("failed", OLD)
    moved = scene.run("succeeded", OLD)
    scene.claim(moved, "moved")
    left = scene.run("succeeded", OLD)
    scene.claim(left, "left")
    unsettled = scene.run("succeeded", OLD)
    scene.claim(unsettled, None)
    retried = scene.run("failed", OLD)
    retry = scene.run("queued", None, retry_of=retried)  # it reuses its results
    done_retried = scene.run("failed", OLD)
    newer = scene.run("succeeded", RECENT, retry_of=done_retried)
    running = scene.run("running", None)
    recent = scene.run("succeeded", RECENT)
    for created, state in ((OLD, "delivered"), (OLD, "pending"), (RECENT, "delivered")):
        scene.conn.execute(
            "INSERT INTO outbox (created_at, event, kind, destination, state, next_at, payload) "
            "VALUES (?, 'service.started', 'service', 'slack:x', ?, 0, '{}')",
            (created, state),
        )
    async with open_store(db_path) as store:
        pruned = await prune_history(store, NOW - timedelta(days=7), chunk=2)
    gone = {old, moved, left, done_retried}
    kept = {unsettled, retried, retry, running, recent, newer}
    ids = {row[0] for row in scene.conn.execute("SELECT id FROM runs")}
    assert gone.isdisjoint(ids)
    assert kept <= ids
    assert pruned == Pruned(
        runs=4, tasks=4, attempts=4, logs=12, events=4, checks=4, alerts=5, file_claims=1
    )
    # of the service's own alerts only the old delivered one went
    runless = scene.conn.execute("SELECT created_at, state FROM outbox WHERE run_id IS NULL")
    assert sorted(runless) == [(OLD, "pending"), (RECENT, "delivered")]
    for table in ("tasks", "attempts", "logs", "events", "checks"):
        left_ids = {r[0] for r in scene.conn.execute(f"SELECT DISTINCT run_id FROM {table}")}
        assert left_ids.isdisjoint(gone), table
    # a pending alert stays; a moved file's claim goes, a left file's claim stays runless
    assert scene.count("SELECT count(*) FROM outbox WHERE run_id = ?", old) == 1
    assert scene.count("SELECT count(*) FROM file_claims WHERE path = ?", f"/in/{moved}.csv") == 0
    assert scene.count("SELECT run_id FROM file_claims WHERE path = ?", f"/in/{left}.csv") is None
    assert scene.count("SELECT retry_of FROM runs WHERE id = ?", newer) is None
    # the full-text index lost the pruned lines, and nothing else
    hits = scene.count("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH 'warehouse'")
    assert hits == 3 * len(kept)
    scene.conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")
    assert scene.conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_a_dry_count_says_what_a_prune_then_does(scene: Scene, db_path: Path) -> None:
    for _ in range(5):
        scene.run("failed", OLD)
    scene.run("succeeded", RECENT)
    cutoff = _iso(NOW - timedelta(days=7))
    counted = count_prunable(scene.conn, cutoff, chunk=2)
    assert scene.count("SELECT count(*) FROM runs") == 6  # nothing written
    async with open_store(db_path) as store:
        pruned = await prune_history(store, NOW - timedelta(days=7))
    assert counted == pruned
    assert pruned.runs == 5
    assert pruned.describe().startswith("5 runs (5 tasks, 5 attempts, 15 log lines")
    assert only_the_recent_run_left(scene)


def only_the_recent_run_left(scene: Scene) -> bool:
    return bool(scene.count("SELECT count(*) FROM runs") == 1)


async def test_the_feeder_prunes_at_start_by_the_injected_clock(
    scene: Scene, db_path: Path
) -> None:
    scene.run("failed", OLD)
    scene.run("failed", RECENT)
    clock = FakeClock(NOW)
    history = HistoryConfig(retention=86400.0, prune_interval=3600.0)
    async with open_store(db_path) as store, anyio.create_task_group() as group:
        await group.start(run_retention, store, clock, history)
        await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: runs_in(db_path) == 1, "the old run pruned")
        )
        group.cancel_scope.cancel()
    assert scene.count("SELECT ended_at FROM runs") == RECENT


async def test_the_feeder_without_retention_prunes_nothing(scene: Scene, db_path: Path) -> None:
    scene.run("failed", OLD)
    async with open_store(db_path) as store, anyio.create_task_group() as group:
        await group.start(run_retention, store, FakeClock(NOW), HistoryConfig())
    assert scene.count("SELECT count(*) FROM runs") == 1


def test_prune_cli_dry_run_and_json(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    anyio.run(_migrate, db_path)
    scene = Scene(db_path)
    scene.run("failed", OLD)
    scene.run("failed", _iso(datetime.now(UTC)))
    db = str(db_path)
    code, out, _ = main_output(capsys, "prune", "--db", db, "--older-than", "7d", "--dry-run")
    assert code == 0
    assert out.startswith("would prune 1 run (1 tasks, 1 attempts, 3 log lines")
    assert scene.count("SELECT count(*) FROM runs") == 2
    code, out, _ = main_output(capsys, "prune", "--db", db, "--older-than", "7d", "--json")
    assert code == 0
    answer = orjson.loads(out)
    assert answer["runs"] == 1
    assert answer["logs"] == 3
    assert answer["dry_run"] is False
    assert scene.count("SELECT count(*) FROM runs") == 1


async def _migrate(db_path: Path) -> None:
    async with open_store(db_path):
        pass


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "no retention configured"),
        (["--older-than", "30s"], "at least 60s"),
        (["--older-than", "soon"], "--older-than"),
    ],
    ids=["unconfigured", "too-short", "not-a-duration"],
)
def test_prune_cli_refuses_without_a_retention(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db_path: Path, args: list[str], words: str
) -> None:
    anyio.run(_migrate, db_path)
    code, _, err = main_output(capsys, "prune", "--db", str(db_path), *args)
    assert code == 2
    assert words in err


@pytest.mark.parametrize(
    ("chunk", "took", "expected"),
    [(50, 0.05, 50), (50, 0.5, 25), (50, 0.001, 100), (400, 0.001, 500), (1, 9.0, 1)],
    ids=["on-target", "slow-halves", "fast-doubles", "capped", "at-least-one"],
)
def test_chunks_are_sized_toward_the_target(chunk: int, took: float, expected: int) -> None:
    assert _next_chunk(chunk, took) == expected
