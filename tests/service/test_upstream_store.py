"""The store side of on_flow triggers (runtime.store.upstream): reads by index from the cursor,
a pass bounded by its limit, a cursor that stops below a run that has not ended and never
moves back, and one downstream run per upstream run however often it is fired."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from runtime import Flow
from runtime.clock import FakeClock
from runtime.engine.runner import Runner
from runtime.store import migrations, upstream
from runtime.store.upstream import Ended, Pending, Watch, upstream_key
from tests.conftest import MakeRunner
from tests.store.rows import peek

WATCH = Watch("report", "on_flow('orders', state='succeeded')", "orders", ("succeeded",))


def report() -> Flow:
    flow = Flow("report", params={"region": "eu"})

    @flow.task
    def work() -> None:
        return None

    return flow


async def add_runs(runner: Runner, clock: FakeClock, states: list[str]) -> list[int]:
    """Runs of orders in *states*, as rows (their tasks are not needed here)."""
    ids: list[int] = []
    for state in states:
        run_id, _ = await runner.store.create_run(
            flow="orders",
            params={"n": len(ids)},
            trigger={"kind": "manual"},
            logical_date=clock.now(),
            created_at=clock.now(),
        )

        def op(db: sqlite3.Connection, r: int = run_id, s: str = state) -> None:
            db.execute("UPDATE runs SET state = ? WHERE id = ?", (s, r))

        await runner.store.writer.submit(op)
        ids.append(run_id)
    return ids


async def one_pass(runner: Runner, clock: FakeClock, limit: int = 500) -> Pending:
    [found] = await runner.store.read(upstream.pending, [WATCH], limit)
    await upstream.fire_upstream(runner.store, [(report(), found)], clock.now())
    return found


def report_keys(db: Path) -> list[str]:
    rows = peek(db, "SELECT idempotency_key FROM runs WHERE flow = 'report' ORDER BY id")
    return [r[0] for r in rows]


def cursor(db: Path) -> int | None:
    rows = peek(db, "SELECT cursor FROM upstream_cursors WHERE flow = 'report'")
    return rows[0][0] if rows else None


def test_the_keys_name_the_upstream_run_and_task() -> None:
    assert upstream_key("orders", 12) == "flow:orders:12"
    assert upstream_key("orders", 12, "load") == "flow:orders:12:load"


def test_the_reads_go_by_the_upstream_flow_from_the_cursor() -> None:
    """A pass costs the upstream's runs above the cursor, not every run in a state."""
    db = sqlite3.connect(":memory:")
    for script in migrations.MIGRATIONS:
        db.executescript(script)
    for watch in (WATCH, Watch("report", "k", "orders", ("succeeded", "failed"), "load")):
        sql = upstream._ended_sql(watch)
        plan = " | ".join(
            row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))
        )
        assert "SEARCH r USING INDEX runs_by_flow (flow=? AND id>?)" in plan
        assert "runs_idempotency (flow=? AND idempotency_key=?)" in plan


async def test_a_first_pass_starts_the_cursor_at_the_newest_run(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    async with make_runner() as runner:
        old = await add_runs(runner, clock, ["succeeded", "running"])
        first = await one_pass(runner, clock)
        assert (first.cursor, first.ended) == (None, [])
        assert cursor(db_path) == old[-1]  # history (and what runs now) does not fire
        again = await one_pass(runner, clock)
    assert again.cursor == old[-1]
    assert report_keys(db_path) == []


async def test_a_pass_is_bounded_and_the_next_one_goes_on(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    async with make_runner() as runner:
        await one_pass(runner, clock)
        ids = await add_runs(runner, clock, ["succeeded"] * 5)
        first = await one_pass(runner, clock, limit=2)
        assert first.more
        assert cursor(db_path) == ids[1]
        second = await one_pass(runner, clock, limit=2)
        third = await one_pass(runner, clock, limit=2)
        assert (second.more, third.more) == (True, False)
    assert report_keys(db_path) == [f"flow:orders:{i}" for i in ids]
    assert cursor(db_path) == ids[-1]


async def test_the_cursor_stops_below_a_run_that_has_not_ended_and_never_moves_back(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    async with make_runner() as runner:
        await one_pass(runner, clock)
        ids = await add_runs(runner, clock, ["succeeded", "queued", "failed", "succeeded"])
        found = await one_pass(runner, clock)
        assert [e.run_id for e in found.ended] == [ids[0], ids[3]]
        assert cursor(db_path) == ids[0]
        stale = Pending(WATCH, 0, advance_to=0, ended=[])
        await upstream.fire_upstream(runner.store, [(report(), stale)], clock.now())
        assert cursor(db_path) == ids[0]
        # the same ended runs fired again (a racing pass, a restart): no second run
        await upstream.fire_upstream(runner.store, [(report(), found)], clock.now())
    assert report_keys(db_path) == [f"flow:orders:{ids[0]}", f"flow:orders:{ids[3]}"]


async def test_the_downstream_run_has_the_upstream_s_date_and_its_own_params(
    make_runner: MakeRunner, clock: FakeClock, db_path: Path
) -> None:
    async with make_runner() as runner:
        await one_pass(runner, clock)
        [run_id] = await add_runs(runner, clock, ["succeeded"])
        ended = Ended(run_id, "succeeded", "2025-03-04T05:06:07Z", {"n": 0})
        made = await upstream.fire_upstream(
            runner.store, [(report(), Pending(WATCH, 0, run_id, [ended]))], clock.now()
        )
    assert [(m[1], m[2]) for m in made] == [(WATCH, ended)]
    [(state, params, logical, trigger)] = peek(
        db_path, "SELECT state, params, logical_date, trigger FROM runs WHERE flow = 'report'"
    )
    assert (state, params, logical) == ("queued", '{"region":"eu"}', "2025-03-04T05:06:07Z")
    assert orjson.loads(trigger) == {
        "kind": "flow",
        "flow": "orders",
        "run_id": run_id,
        "state": "succeeded",
        "logical_date": "2025-03-04T05:06:07Z",
        "params": {"n": 0},
    }
