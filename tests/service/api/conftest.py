"""The read API's tests: one generated history per test module (bench/history.py), copied
into each test's database; the API served over it with flows named as the history's."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime import Flow, cron, every, on_event
from runtime.clock import FakeClock

# bench/ holds scripts that import each other by name; the history generator is one of them
BENCH = str(Path(__file__).resolve().parents[3] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from history import History, generate

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the FakeClock's start: the history ends here
RUNS = 400


def _flows() -> dict[str, Flow]:
    orders = Flow("orders", triggers=[cron("0 * * * *")], params={"day": "today"})
    billing = Flow("billing", triggers=[every("15m")])
    clickstream = Flow("clickstream", triggers=[on_event("landed")])
    flows = {flow.name: flow for flow in (orders, billing, clickstream)}
    for flow in flows.values():
        flow.task()(noop)
    return flows


def noop() -> None:
    """The one task of each flow: the run queue does not run here, nothing is executed."""


FLOWS = _flows()


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> History:
    """A history of 400 runs over 3 flows (the last, clickstream, paused), ending at NOW."""
    where = tmp_path_factory.mktemp("history") / "history.db"
    return generate(where, runs=RUNS, flows=len(FLOWS), end=NOW, days=60, log_lines_per_task=2)


@pytest.fixture
def history(history_file: History, db_path: Path) -> History:
    """The module's history, copied to this test's ``db_path`` (tests may add runs)."""
    shutil.copyfile(history_file.path, db_path)
    return History(
        path=db_path,
        flows=history_file.flows,
        tasks=history_file.tasks,
        mapped=history_file.mapped,
        first=history_file.first,
        last=history_file.last,
        counts=dict(history_file.counts),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def sql(db: Path, query: str, *args: Any) -> list[Any]:
    """*query* on a connection of its own; single-column rows flattened."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(query, args).fetchall()
    finally:
        conn.close()
    return [row[0] if len(row) == 1 else row for row in rows]
