"""``GET /api/stream`` through a real aiohttp client against a served API over a real runner
running real flows: run and task events in order, filters, log lines (live and caught up),
queued runs. Slow clients, many clients, stopping, auth and bad input: test_stream_clients."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime import Flow, Run
from runtime.engine.events import RunStarted
from runtime.service.api.streamclient import StreamLimits
from tests.conftest import MakeRunner
from tests.service.api_server import open_api
from tests.service.stream_helpers import (
    CHAIN,
    FAST,
    FLOWS,
    GATE,
    OTHER,
    ended,
    run_in,
    steps,
    stream,
)


@pytest.fixture(autouse=True)
def _no_gates() -> None:
    GATE.clear()


# --- events of a run ---


async def test_run_and_task_events_arrive_in_order(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=FAST) as api,
        stream(api) as reader,
        anyio.create_task_group() as group,
    ):
        await run_in(group, runner, CHAIN, who="ada")
        last = await reader.until(ended(1), "run 1 ends")
    assert last.data["state"] == "succeeded"
    assert steps(reader) == [
        ("run", "running"),
        ("task", "extract", "running"),
        ("task", "extract", "succeeded"),
        ("task", "load", "running"),
        ("task", "load", "succeeded"),
        ("run", "succeeded"),
    ]
    task = reader.events("task")[0]
    assert set(task) == {"run_id", "flow", "task", "name", "index", "state", "attempt", "ts"}
    assert (task["run_id"], task["flow"], task["index"], task["attempt"]) == (1, "chain", None, 1)
    assert datetime.fromisoformat(task["ts"]).tzinfo is not None
    assert set(reader.events("run")[0]) == {"run_id", "flow", "state", "ts"}
    assert reader.events("log") == []  # log lines only with ?run=


async def test_run_filter_gets_that_runs_events_and_log_lines(make_runner: MakeRunner) -> None:
    GATE["load"] = anyio.Event()
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=FAST) as api,
        anyio.create_task_group() as group,
    ):
        await run_in(group, runner, CHAIN, who="ada")  # run 1, held at the gate
        async with stream(api, "?run=1&after=0") as mine, stream(api, "?flow=other") as others:
            await mine.until(lambda f: f.kind == "log", "run 1's first log line")
            await run_in(group, runner, OTHER)  # run 2: not for ?run=1
            await others.until(ended(2), "run 2 ends (the flow's stream)")
            GATE["load"].set()
            await mine.until(
                lambda f: f.kind == "log" and "done" in f.data["message"], "the last line"
            )
            await mine.until(ended(1), "run 1 ends")
    assert {frame.data["run_id"] for frame in mine.seen if frame.kind != "retry"} == {1}
    assert {f.data["run_id"] for f in others.seen if f.kind in {"run", "task"}} == {2}
    lines = mine.events("log")
    assert [(line["task"], line["level"], line["message"]) for line in lines] == [
        ("extract", "INFO", "extract for ada"),
        ("load", "INFO", "load starts"),
        ("load", "WARNING", "load done: 2"),
    ]
    assert set(lines[0]) == {"id", "run_id", "task", "ts", "level", "message"}
    ids = [line["id"] for line in lines]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert [f.id for f in mine.seen if f.kind == "log"] == [str(i) for i in ids]  # SSE ids


async def test_a_run_page_catches_up_after_the_line_it_shows(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS, streams=FAST) as api:
        await runner.run(CHAIN, {"who": "bo"})
        await runner.store.writer.flush()
        async with stream(api, "?run=1&after=0") as everything:
            await everything.until(lambda f: "done" in str(f.data), "the run's last line")
        first = everything.events("log")[0]["id"]
        async with stream(api, f"?run=1&after={first}") as rest:
            await rest.until(lambda f: "done" in str(f.data), "the run's last line")
        # a browser reconnecting sends the last id it got; that wins over a stale ?after=
        second = rest.events("log")[0]["id"]
        headers = {"Last-Event-ID": str(second)}
        async with stream(api, "?run=1&after=0", headers) as resumed:
            await resumed.until(lambda f: "done" in str(f.data), "the run's last line")
        async with stream(api, "?run=1") as only_new:  # without after: only new lines
            await only_new.until(lambda f: f.kind == "comment", "a ping")
    assert [line["message"] for line in everything.events("log")] == [
        "extract for bo",
        "load starts",
        "load done: 2",
    ]
    assert [line["message"] for line in rest.events("log")] == ["load starts", "load done: 2"]
    assert [line["message"] for line in resumed.events("log")] == ["load done: 2"]
    assert only_new.events("log") == []


CHATTY = Flow("chatty")


@CHATTY.task
async def talk(run: Run) -> None:
    await GATE["talk"].wait()
    for n in range(50):
        run.log.info("line %d", n)


async def test_a_chatty_run_is_tailed_to_its_last_line(make_runner: MakeRunner) -> None:
    GATE["talk"] = anyio.Event()
    limits = StreamLimits(batch=8, log_interval=0.05, coalesce=0.01)  # 50 lines: 7 reads
    async with (
        make_runner() as runner,
        open_api(runner, {"chatty": CHATTY}, streams=limits) as api,
        anyio.create_task_group() as group,
    ):
        run_id = await run_in(group, runner, CHATTY)
        async with stream(api, f"?run={run_id}&after=0") as reader:
            GATE["talk"].set()
            await reader.until(lambda f: f.kind == "log" and f.data["message"] == "line 49", "49")
    assert [line["message"] for line in reader.events("log")] == [f"line {n}" for n in range(50)]


async def test_a_page_too_far_behind_is_told_to_resync(make_runner: MakeRunner) -> None:
    limits = StreamLimits(queue=4, log_interval=0.05)  # catch-ups of 2 lines at most
    async with make_runner() as runner, open_api(runner, FLOWS, streams=limits) as api:
        await runner.run(CHAIN)  # three lines: more than a catch-up may send
        await runner.store.writer.flush()
        async with stream(api, "?run=1&after=0") as behind:
            frames = await behind.to_end()
    assert frames[0].kind == "retry"
    assert frames[-1].kind == "resync"
    assert not [f for f in frames if f.kind == "log"]


# --- what happened before the client connected ---


async def test_a_client_that_connects_late_gets_the_latest_states_first(
    make_runner: MakeRunner,
) -> None:
    GATE["load"] = anyio.Event()
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=FAST) as api,
        anyio.create_task_group() as group,
    ):
        run_id = await run_in(group, runner, CHAIN)  # extract done, load at the gate
        await run_in(group, runner, OTHER)  # run 2: ends at once
        async with (
            stream(api, f"?run={run_id}") as page,
            stream(api, "?flow=chain") as grid,
            stream(api) as home,
        ):
            await page.until(lambda f: f.kind == "task" and f.data["task"] == "load", "load")
            await grid.until(lambda f: f.kind == "task" and f.data["task"] == "load", "load")
            await home.until(lambda f: f.kind == "run" and f.data["run_id"] == 2, "run 2")
            GATE["load"].set()
            await page.until(ended(run_id), "the end")
    assert steps(page)[:3] == [
        ("run", "running"),
        ("task", "extract", "succeeded"),
        ("task", "load", "running"),
    ]
    assert steps(grid)[:3] == steps(page)[:3]
    assert steps(home)[:2] == [("run", "running"), ("run", "succeeded")]  # runs 1 and 2


async def test_a_run_that_ended_a_while_ago_is_not_replayed(make_runner: MakeRunner) -> None:
    limits = StreamLimits(replay_window=0.0, ping=0.05)
    async with make_runner() as runner, open_api(runner, FLOWS, streams=limits) as api:
        result = await runner.run(OTHER)
        await runner.store.writer.flush()
        async with stream(api, f"?run={result.id}") as page, stream(api) as home:
            await page.until(lambda f: f.kind == "comment", "a ping")
            await home.until(lambda f: f.kind == "comment", "a ping")
    assert steps(page) == steps(home) == []


# --- queued runs ---


async def test_queued_runs_are_announced_from_any_writer(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=FAST) as api,
        stream(api) as everything,
        stream(api, "?flow=chain") as chain_only,
    ):
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{api.url}/api/flows/chain/runs", json={}, headers=api.headers) as resp,
        ):
            assert resp.status == 201
            queued = (await resp.json())["id"]
        first = await everything.until(lambda f: f.kind == "run", "the API's run queued")
        # another process (sluiceway trigger) writes the run row itself
        other = insert_queued(db_path, "other")
        second = await everything.until(
            lambda f: f.kind == "run" and f.data["run_id"] == other, "the other run queued"
        )
        await chain_only.until(lambda f: f.kind == "run", "chain's run on its flow's stream")
    assert first.data == {
        "run_id": queued,
        "flow": "chain",
        "state": "queued",
        "ts": first.data["ts"],
    }
    assert (second.data["run_id"], second.data["flow"], second.data["state"]) == (
        other,
        "other",
        "queued",
    )
    assert [f.data["run_id"] for f in chain_only.seen if f.kind == "run"] == [queued]
    assert [f.data["run_id"] for f in everything.seen if f.kind == "run"] == [queued, other]


async def test_a_run_the_bus_reported_started_is_not_sent_back_to_queued(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=FAST) as api,
        stream(api) as everything,
    ):
        # the row still reads queued when the poll comes (the writer commits the start
        # later), but the bus already said it started
        claimed = insert_queued(db_path, "chain")
        runner.bus.publish(RunStarted(datetime.now(UTC), claimed, "chain"))
        waiting = insert_queued(db_path, "chain")
        await everything.until(
            lambda f: f.kind == "run" and f.data["run_id"] == waiting, "the other run queued"
        )
    runs = [(f.data["run_id"], f.data["state"]) for f in everything.seen if f.kind == "run"]
    assert runs == [(claimed, "running"), (waiting, "queued")]


def insert_queued(db: Path, flow: str) -> int:
    conn = sqlite3.connect(db, timeout=5, isolation_level=None)
    try:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        cursor = conn.execute(
            "INSERT INTO runs (flow, state, params, trigger, logical_date, created_at) "
            "VALUES (?, 'queued', '{}', '{\"kind\": \"manual\"}', ?, ?)",
            (flow, now, now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    finally:
        conn.close()
