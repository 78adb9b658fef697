"""The generated history (bench/history.py) holds what the API's tests and the benches rely on:
every trigger kind, failures with tracebacks and retries, mapped instances, checks, SLA
misses, alert rows in every state, queued and running runs; in a store the product opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from history import History, generate

from runtime.store import open_store
from tests.service.api.conftest import RUNS, sql


def test_the_history_holds_every_part(history_file: History) -> None:
    db = history_file.path
    kinds = sql(db, "SELECT DISTINCT json_extract(trigger, '$.kind') FROM runs ORDER BY 1")
    assert kinds == sorted(
        ["api", "backfill", "event", "file", "flow", "manual", "retry", "schedule"]
    )
    states = set(sql(db, "SELECT DISTINCT state FROM runs"))
    assert states == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert sql(db, "SELECT COUNT(*) FROM runs") == [RUNS]
    assert sql(db, "SELECT COUNT(*) FROM runs WHERE retry_of IS NOT NULL")[0] > 0
    retried = sql(db, "SELECT COUNT(*) FROM attempts WHERE attempt > 1 AND state = 'succeeded'")
    assert retried[0] > 0
    tracebacks = sql(db, "SELECT traceback FROM attempts WHERE state = 'failed'")
    assert tracebacks
    assert all(tb.startswith("Traceback (most recent call last)") for tb in tracebacks)
    assert sql(db, "SELECT MAX(idx) FROM tasks WHERE name = 'load'") == [4]
    assert sql(db, "SELECT COUNT(*) FROM tasks WHERE state = 'upstream_failed'")[0] > 0
    assert sql(db, "SELECT COUNT(*) FROM checks WHERE passed = 0")[0] > 0
    assert sql(db, "SELECT COUNT(*) FROM events WHERE kind = 'sla.missed'")[0] > 0
    assert set(sql(db, "SELECT DISTINCT state FROM outbox")) >= {"delivered", "dead", "pending"}
    assert sql(db, "SELECT flow FROM paused") == [history_file.flows[-1]]
    # created_at follows the id, over the span asked for
    first, last = sql(db, "SELECT MIN(created_at), MAX(created_at) FROM runs")[0]
    assert first[:10] >= history_file.first.date().isoformat()
    assert last[:10] <= history_file.last.date().isoformat()
    assert sql(db, "SELECT COUNT(*) FROM runs a JOIN runs b ON b.id = a.id + 1 "
               "WHERE b.created_at < a.created_at") == [0]  # fmt: skip


async def test_the_store_opens_it_and_a_second_generate_refuses_the_file(
    history_file: History, tmp_path: Path
) -> None:
    async with open_store(history_file.path) as store:
        assert store.path == history_file.path
    with pytest.raises(FileExistsError, match="exists"):
        generate(history_file.path, runs=1)


def test_log_lines_in_all_spreads_about_that_many(tmp_path: Path) -> None:
    made = generate(tmp_path / "logs.db", runs=40, flows=2, log_lines=3000)
    assert 2400 <= made.counts["logs"] <= 3600
    assert made.counts["logs"] == sql(made.path, "SELECT COUNT(*) FROM logs")[0]
