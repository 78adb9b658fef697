"""The dashboard's reads over a store written by the real runner and writer: the day's
failures and SLA misses stop at their bound, pages by cursor, log tails and pages, alerts of
a run, and the LIKE search taking ``%`` and ``_`` literally."""

from __future__ import annotations

from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from runtime import Flow, Run
from runtime.store import connect_reader, dashboard
from runtime.store.outbox import Queued, queue_alert
from runtime.store.requests import record_sla_miss
from runtime.testing import FakeClock
from tests.conftest import MakeRunner


def read(db: Path, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with closing(connect_reader(db)) as conn:
        return fn(conn, *args, **kwargs)


def talker(name: str, lines: list[str], fail: bool = False) -> Flow:
    flow = Flow(name)

    @flow.task
    def say(run: Run) -> None:
        for line in lines:
            run.log.info("%s", line)
        if fail:
            raise RuntimeError("no")

    return flow


async def test_recent_failures_stop_at_the_bound(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    bad = talker("bad", [], fail=True)
    async with make_runner() as runner:
        old = await runner.run(bad)
        clock.advance(30 * 3600)
        await runner.run(talker("good", []))
        new = [await runner.run(bad) for _ in range(3)]
    since = clock.now() - timedelta(hours=24)
    found = await anyio.to_thread.run_sync(read, db_path, dashboard.recent_failures, since)
    assert [run["id"] for run in found] == [r.id for r in reversed(new)]
    assert old.id not in {run["id"] for run in found}
    assert found[0]["error"]
    capped = read(db_path, dashboard.recent_failures, since, 2)
    assert len(capped) == 2


async def test_recent_sla_misses(make_runner: MakeRunner, clock: FakeClock, db_path: Path) -> None:
    async with make_runner() as runner:
        first = await runner.run(talker("slow", []))
        await record_sla_miss(runner.store, first.id, None, clock.now(), {"sla": 60.0,
                              "deadline": "2026-01-01T00:01:00Z"})  # fmt: skip
        clock.advance(2 * 86400)
        second = await runner.run(talker("slow", []))
        await record_sla_miss(runner.store, second.id, "say", clock.now(), {"sla": 5.0})
    since = clock.now() - timedelta(hours=24)
    found = read(db_path, dashboard.recent_sla_misses, since)
    assert [(m["run_id"], m["task"], m["flow"], m["sla"]) for m in found] == [
        (second.id, "say", "slow", 5.0)
    ]


async def test_runs_and_grid_page_by_cursor(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    flow = talker("paged", ["x"])
    async with make_runner() as runner:
        ids = [(await runner.run(flow)).id for _ in range(5)]
        await runner.run(talker("other", []))
    page, cursor = read(db_path, dashboard.grid_runs, "paged", 2)
    assert [r["id"] for r in page] == [ids[4], ids[3]]
    page, cursor = read(db_path, dashboard.grid_runs, "paged", 2, cursor)
    assert [r["id"] for r in page] == [ids[2], ids[1]]
    page, cursor = read(db_path, dashboard.grid_runs, "paged", 2, cursor)
    assert [r["id"] for r in page] == [ids[0]]
    assert cursor is None
    cells = read(db_path, dashboard.grid_cells, ids)
    assert {(c["run_id"], c["name"], c["state"], c["count"]) for c in cells} == {
        (i, "say", "succeeded", 1) for i in ids
    }
    assert read(db_path, dashboard.grid_cells, []) == []


async def test_log_tail_and_pages(make_runner: MakeRunner, db_path: Path) -> None:
    lines = [f"line {i}" for i in range(12)]
    async with make_runner() as runner:
        run = await runner.run(talker("chatty", lines))
    tail = read(db_path, dashboard.log_tail, run.id, 5)
    assert [line["message"] for line in tail] == lines[-5:]  # oldest first, the newest 5
    assert {line["task"] for line in tail} == {"say"}
    first, cursor = read(db_path, dashboard.log_page, run.id, limit=5)
    assert [line["message"] for line in first] == lines[:5]
    second, cursor = read(db_path, dashboard.log_page, run.id, after=cursor, limit=5)
    assert [line["message"] for line in second] == lines[5:10]
    last, cursor = read(db_path, dashboard.log_page, run.id, after=cursor, limit=5)
    assert [line["message"] for line in last] == lines[10:]
    assert cursor is None
    none, _ = read(db_path, dashboard.log_page, run.id, name="nope")
    assert none == []


async def test_run_alerts(make_runner: MakeRunner, clock: FakeClock, db_path: Path) -> None:
    async with make_runner() as runner:
        run = await runner.run(talker("loud", [], fail=True))
        alert = {"event": "run.failed", "kind": "alert", "flow": "loud", "run_id": run.id}
        await runner.store.writer.submit(
            lambda db: queue_alert(db, alert, [Queued("ops"), Queued("pager")], clock.now())
        )
    alerts = read(db_path, dashboard.run_alerts, run.id)
    assert [(a["event"], a["destination"], a["state"]) for a in alerts] == [
        ("run.failed", "ops", "pending"),
        ("run.failed", "pager", "pending"),
    ]
    assert read(db_path, dashboard.run_alerts, run.id + 1) == []
