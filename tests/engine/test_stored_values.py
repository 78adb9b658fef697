"""Stored results and params through a real SQLite file and back: a downstream task gets the
same value whether its upstream ran in this run or its stored result was reused (retry of a
run, resume after a crash), and a run's params read back as the run had them."""

from __future__ import annotations

import math
import os
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from runtime import Branch, Flow, codec
from runtime.config import Config
from runtime.engine.handle import RunHandle
from runtime.engine.runner import open_runner
from runtime.errors import ParamError
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from runtime.store.cursors import fire_scheduled
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.test_codec import ISSUE, ROUND_TRIP, WHEN, same

S = TaskState


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def stored_results(db_path: Path, run_id: int) -> dict[tuple[str, int], Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.stored_results(conn, run_id)


def set_result(db_path: Path, run_id: int, name: str, stored: bytes) -> None:
    """Overwrite a stored result, as another version of Sluiceway would have written it."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "UPDATE tasks SET result = ? WHERE run_id = ? AND name = ? AND idx = -1",
            (stored, run_id, name),
        )


class Thing:
    """A result nothing can store: kept in memory only."""


def flaky_pair(value: Any) -> tuple[Flow, Counter[str], list[Any]]:
    """``up`` returns *value*; ``down`` records what it got and fails the first time."""
    flow = Flow("pair")
    calls: Counter[str] = Counter()
    got: list[Any] = []

    @flow.task
    def up() -> Any:
        calls["up"] += 1
        return value() if callable(value) else value

    @flow.task
    def down(up: Any) -> None:
        calls["down"] += 1
        got.append(up)
        if calls["down"] == 1:
            raise ConnectionError("the warehouse is down")

    return flow, calls, got


# --- retry of a run ---


async def test_retry_hands_down_the_same_types(make_runner: MakeRunner, db_path: Path) -> None:
    """Issue 9, item 4: `down` got a str, a list, the key '1' and None on retry. A row an
    earlier version stored (plain orjson) still reads as it did."""
    flow, calls, got = flaky_pair(ISSUE)
    async with make_runner() as runner:
        first = await runner.run(flow)
        assert first.tasks["down"].state is S.FAILED
        second = await runner.retry(flow, first.id)
        old = orjson.dumps(ISSUE, option=orjson.OPT_NON_STR_KEYS)
        await runner.store.flush()
        await anyio.to_thread.run_sync(set_result, db_path, first.id, "up", old)
        third = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert third.state is RunState.SUCCEEDED
    assert calls == {"up": 1, "down": 3}  # up's stored result was reused, both times
    assert same(got[0], ISSUE)
    assert same(got[1], got[0])  # datetime, tuple, int key and NaN, as up returned them
    assert stored_run(db_path, second.id)["tasks"][0]["reason"] == (
        "result reused from an earlier attempt"
    )
    assert got[2] == {"when": "2026-01-02T03:04:05.123456+00:00", "pair": [1, 2], "1": "x",
                      "nan": None}  # fmt: skip


async def test_every_round_trip_value_through_the_store_and_back(
    make_runner: MakeRunner, db_path: Path
) -> None:
    """The codec's whole table, as results of mapped instances stored in SQLite, read back
    by the query a retry uses, and handed down again by a retry (a Branch only means
    something returned by a task itself: test_a_reused_branch_keeps_its_choice)."""
    table = [(n, v) for n, v in ROUND_TRIP if not isinstance(v, Branch)]
    values = [v for _, v in table]
    flow = Flow("table")
    calls: Counter[str] = Counter()
    got: list[list[Any]] = []

    @flow.task
    def indices() -> list[int]:
        return list(range(len(values)))

    @flow.task(map="indices")
    def make(indices: int) -> Any:
        calls["make"] += 1
        return values[indices]

    @flow.task
    def check(make: list[Any]) -> None:
        got.append(make)
        if len(got) == 1:
            raise ValueError("fail once")

    async with make_runner() as runner:
        first = await runner.run(flow)
        await runner.store.flush()
        stored = await anyio.to_thread.run_sync(stored_results, db_path, first.id)
        second = await runner.retry(flow, first.id)
    for i, (name, value) in enumerate(table):
        assert same(stored[("make", i)], value), name
    assert same(stored[("make", -1)], values)
    assert second.state is RunState.SUCCEEDED
    assert calls["make"] == len(values)  # nothing ran again
    assert same(got[1], values)


async def test_a_result_that_cannot_be_stored_runs_again_on_retry(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow, calls, got = flaky_pair(Thing)
    async with make_runner() as runner:
        first = await runner.run(flow)
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert calls == {"up": 2, "down": 2}
    assert all(type(v) is Thing for v in got)
    up = stored_run(db_path, first.id)["tasks"][0]
    assert up["state"] == "succeeded"
    assert up["reason"] == (
        "result not stored, so a retry or resume runs it again: "
        "tests.engine.test_stored_values.Thing is not a type Sluiceway stores"
    )
    assert stored_run(db_path, second.id)["tasks"][0]["reason"].startswith("result not stored")


async def test_a_result_over_result_max_bytes_runs_again_and_says_why(tmp_path: Path) -> None:
    flow, calls, _ = flaky_pair(["x" * 100] * 20)
    config = Config(db=tmp_path / "small.db", result_max_bytes=1000, flush_interval=0.01)
    async with open_runner(config, clock=FakeClock()) as runner:
        first = await runner.run(flow)
        await runner.retry(flow, first.id)
    assert calls == {"up": 2, "down": 2}
    reason = stored_run(config.db, first.id)["tasks"][0]["reason"]
    assert reason == (
        "result not stored, so a retry or resume runs it again: "
        "2061 bytes stored is more than result_max_bytes (1000)"
    )


async def test_a_stored_result_that_cannot_be_read_back_runs_again(
    make_runner: MakeRunner, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tag this version does not know (a newer version wrote it): run it again rather than
    hand on something else."""
    flow, calls, _ = flaky_pair(WHEN)
    async with make_runner() as runner:
        first = await runner.run(flow)
        newer = b'{"__sluiceway__":"datetime64","value":"2026-01-02"}'
        await runner.store.flush()
        await anyio.to_thread.run_sync(set_result, db_path, first.id, "up", newer)
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert calls == {"up": 2, "down": 2}
    assert f"run={first.id} task=up stored result cannot be read back" in caplog.text
    assert "unknown stored value tag 'datetime64'" in caplog.text


async def test_a_reused_branch_keeps_its_choice_in_either_stored_form(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("branching")
    calls: Counter[str] = Counter()

    @flow.task
    def choose() -> Branch:
        calls["choose"] += 1
        return Branch("full")

    @flow.task
    def full(choose: Any) -> None:
        calls["full"] += 1
        if calls["full"] == 1:
            raise ValueError("fail once")

    @flow.task
    def quick(choose: Any) -> None:
        calls["quick"] += 1

    async with make_runner() as runner:
        first = await runner.run(flow)
        await runner.store.flush()
        with closing(connect_reader(db_path)) as conn:
            (stored,) = conn.execute(
                "SELECT result FROM tasks WHERE run_id = ? AND name = 'choose'", (first.id,)
            ).fetchone()
        assert stored == b'{"__sluiceway__":"branch","value":["full"]}'
        second = await runner.retry(flow, first.id)
        old = b'{"__sluiceway_branch__":["full"]}'  # as earlier versions stored it
        await anyio.to_thread.run_sync(set_result, db_path, first.id, "choose", old)
        third = await runner.retry(flow, first.id)
    assert calls == {"choose": 1, "full": 3}
    for retried in (second, third):
        assert retried.state is RunState.SUCCEEDED
        assert retried.tasks["quick"].state is S.SKIPPED


# --- resume after a crash or restart (the same reuse path) ---


async def test_a_resumed_run_hands_down_the_same_types(make_runner: MakeRunner) -> None:
    """`down` is interrupted (a service stop) after its upstreams succeeded; the resumed run
    reuses a stored result that reads back the same, and runs again a task whose result
    could not be stored."""
    flow = Flow("resumed")
    calls: Counter[str] = Counter()
    got: list[tuple[Any, Any]] = []
    started = anyio.Event()

    @flow.task
    def typed() -> Any:
        calls["typed"] += 1
        return ISSUE

    @flow.task
    def thing() -> Thing:
        calls["thing"] += 1
        return Thing()

    @flow.task
    async def down(typed: Any, thing: Thing) -> None:
        calls["down"] += 1
        got.append((typed, thing))
        if calls["down"] == 1:
            started.set()
            await anyio.sleep_forever()

    handle = RunHandle()
    async with make_runner() as runner, anyio.create_task_group() as tg:
        interrupted: list[Any] = []

        async def first() -> None:
            interrupted.append(await runner.run(flow, handle=handle))

        tg.start_soon(first)
        await started.wait()
        handle.interrupt()
    assert interrupted[0].state is RunState.RUNNING  # left for the next start to resume
    async with make_runner() as runner:
        assert runner.try_admit(flow)
        resumed = await runner.resume(flow, interrupted[0].id)
    assert resumed.state is RunState.SUCCEEDED
    assert calls == {"typed": 1, "thing": 2, "down": 2}
    assert same(got[1][0], got[0][0])
    assert type(got[1][1]) is Thing


# --- params ---

ODD_PARAMS = {"x": math.nan, "n": 99999999999999999999999, "when": WHEN, "pair": (1, 2)}


async def test_params_are_stored_as_the_run_had_them(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("params", params={"x": 0.0, "n": 0, "when": None, "pair": None, "region": "eu"})
    seen: list[dict[str, Any]] = []

    @flow.task
    def record(x: float, n: int, when: datetime, pair: tuple[int, int]) -> None:
        seen.append({"x": x, "n": n, "when": when, "pair": pair})
        if len(seen) == 1:
            raise ValueError("fail once")

    async with make_runner() as runner:
        first = await runner.run(flow, ODD_PARAMS)
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert same(seen[0], ODD_PARAMS)
    assert same(seen[1], ODD_PARAMS)  # the retry read them back from the store
    view = stored_run(db_path, first.id)["params"]  # what show --json prints
    assert view["x"] == {"__sluiceway__": "float", "value": "nan"}
    assert view["n"] == {"__sluiceway__": "int", "value": "99999999999999999999999"}
    assert view["region"] == "eu"  # plain values as before
    assert same(codec.from_json(view), {**ODD_PARAMS, "region": "eu"})
    with closing(connect_reader(db_path)) as conn:
        (text,) = conn.execute("SELECT params FROM runs WHERE id = ?", (first.id,)).fetchone()
    assert text.endswith(',"region":"eu"}')


async def test_a_param_that_cannot_be_stored_is_refused_before_any_run(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("refuse", params={"source": None})

    @flow.task
    def noop(source: Any) -> None:
        pass

    async with make_runner() as runner:
        with pytest.raises(ParamError, match=r"flow 'refuse': param 'source': .*Thing is not a"):
            await runner.run(flow, {"source": Thing()})
        with pytest.raises(ParamError, match="param 'source'"):
            await runner.run(flow, {"source": {"nested": [Thing()]}})
    with closing(connect_reader(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_flow_run_refuses_a_param_that_cannot_be_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("SLUICEWAY_")]:
        monkeypatch.delenv(key)
    flow = Flow("from_python", params={"source": None})

    @flow.task
    def noop(source: Any) -> None:
        pass

    with pytest.raises(ParamError, match="param 'source'"):
        flow.run(source=Thing())
    with closing(sqlite3.connect(tmp_path / "sluiceway.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert flow.run(source=datetime(2026, 1, 1, tzinfo=UTC)).state is RunState.SUCCEEDED


def test_a_default_that_cannot_be_stored_is_a_flow_problem() -> None:
    flow = Flow("bad_default", params={"source": Thing(), "fine": (1, 2)})

    @flow.task
    def noop(source: Any, fine: Any) -> None:
        pass

    (problem,) = flow.problems()
    assert "flow 'bad_default': param 'source': tests.engine.test_stored_values.Thing" in problem


async def test_a_scheduled_run_gets_its_flow_defaults_as_declared(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    """The scheduler stores the flow's defaults with each run; the service claims the run
    and executes it with the params read back from the store."""
    defaults = {"day": date(2026, 1, 2), "ratio": math.inf, "keys": {1: "a"}}
    flow = Flow("nightly", params=defaults)
    seen: list[dict[str, Any]] = []

    @flow.task
    def record(day: date, ratio: float, keys: dict[int, str]) -> None:
        seen.append({"day": day, "ratio": ratio, "keys": keys})

    async with make_runner() as runner:
        now = clock.now()
        (run_id,) = await fire_scheduled(
            runner.store, flow=flow, trigger_key="every", instants=[now], cursor=now, now=now
        )
        claimed = await runner.store.claim_runs([run_id], runner.epoch, now)
        assert runner.try_admit(flow)
        result = await runner.run_claimed(flow, run_id, claimed[run_id])
    assert result.state is RunState.SUCCEEDED
    assert same(seen[0], defaults)
