"""``GET /api/stream`` through a real aiohttp client against a served API over a real runner
running real flows: run and task events in order, filters, log lines (live and caught up),
queued runs, a slow client dropped without hurting the others or the engine, streams ending
when the server stops, auth and bad input."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from runtime import Flow, Run
from runtime.engine.events import Event, RunStarted, TaskEnded
from runtime.engine.runner import Runner
from runtime.service.api.streamclient import StreamLimits
from runtime.service.api.streams import StreamHub
from runtime.states import TaskState
from tests.conftest import MakeRunner
from tests.service.api_server import Api, open_api
from tests.service.sse_client import SseReader
from tests.waiting import WAIT

FAST = StreamLimits(ping=0.2, runs_interval=0.2, log_interval=0.05, drop_after=0.5)

CHAIN = Flow("chain", params={"who": "world"})
OTHER = Flow("other")
GATE: dict[str, anyio.Event] = {}


@CHAIN.task
def extract(run: Run) -> int:
    run.log.info("extract for %s", run.params["who"])
    return 1


@CHAIN.task
async def load(run: Run, extract: int) -> int:
    run.log.info("load starts")
    gate = GATE.get("load")
    if gate is not None:
        await gate.wait()
    run.log.warning("load done: %d", extract + 1)
    return extract + 1


@OTHER.task
def lonely(run: Run) -> None:
    run.log.info("other line")


FLOWS = {flow.name: flow for flow in (CHAIN, OTHER)}


@pytest.fixture(autouse=True)
def _no_gates() -> None:
    GATE.clear()


@asynccontextmanager
async def stream(
    api: Api, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """An open stream, once the server has registered it (its ``retry:`` line was read)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{api.url}/api/stream{query}", headers={**api.headers, **(headers or {})}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        reader = SseReader(resp)
        hello = await reader.next()
        assert hello is not None
        assert (hello.kind, hello.data) == ("retry", 2000)
        yield reader


def hub_of(api: Api) -> StreamHub:
    assert api.server is not None
    assert api.server.hub is not None
    return api.server.hub


def ended(run_id: int) -> Any:
    return lambda f: (
        f.kind == "run"
        and f.data["run_id"] == run_id
        and f.data["state"]
        in {
            "succeeded",
            "failed",
            "cancelled",
        }
    )


def steps(reader: SseReader) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for frame in reader.seen:
        if frame.kind == "run":
            out.append(("run", frame.data["state"]))
        elif frame.kind == "task":
            out.append(("task", frame.data["task"], frame.data["state"]))
    return out


async def run_in(group: anyio.abc.TaskGroup, runner: Runner, flow: Flow, **params: Any) -> int:
    """Start a run of *flow* in *group*; its id, once its row is committed (the API reads
    only what is)."""
    started: list[int] = []
    seen = anyio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted) and not started:
            started.append(event.run_id)
            seen.set()

    unsubscribe = runner.bus.subscribe(on_event)
    try:
        group.start_soon(lambda: runner.run(flow, params))
        with anyio.fail_after(WAIT):
            await seen.wait()
    finally:
        unsubscribe()
    await runner.store.writer.flush()
    return started[0]


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
    assert [f.kind for f in frames] == ["retry", "resync"]


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


# --- slow clients, many clients, stopping ---


def raw_stream(api: Api, query: str = "") -> socket.socket:
    """A client that asks for the stream and then does not read: a receive buffer of 4 KiB,
    so the server's writes to it soon block."""
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/stream{query} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {api.token}\r\n\r\n".encode()
    )
    return sock


def task_event(run_id: int, n: int) -> TaskEnded:
    """A task event of about 2 KiB (a long task name), so that a few thousand fill the
    sockets' buffers."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    name = "t" * 2000
    return TaskEnded(moment, run_id, "chain", f"{name}[{n}]", name, n, TaskState.SUCCEEDED, 1, 0.1)


async def test_a_slow_client_is_dropped_and_the_others_keep_up(make_runner: MakeRunner) -> None:
    limits = StreamLimits(queue=500, drop_after=0.5, ping=60)
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS, streams=limits) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}/api/stream?flow=chain", headers=api.headers) as response,
    ):
        hub = hub_of(api)
        slow = raw_stream(api)
        good = RawEvents(response)
        try:
            await wait_for(lambda: hub.count == 2, "both clients registered")
            sent = 0
            while hub.count == 2 and sent < 200_000:  # until the slow client is gone
                for _ in range(200):  # a burst: the engine waits for no one
                    sent += 1
                    runner.bus.publish(task_event(99, sent))
                await good.read_until(b"event: task", sent)  # the good client keeps up
            assert hub.count == 1, f"the slow client was never dropped after {sent} events"
            await anyio.to_thread.run_sync(drain_to_close, slow)
            # the engine and the good client go on as before
            result = await runner.run(CHAIN, {"who": "after"})
            await good.read_until(b"event: run", 2)  # the next run's start and end
        finally:
            slow.close()
    got = good.data()
    assert result.state == "succeeded"
    # every event of the bursts, in order: nothing lost for the client that keeps up
    indexes = [int(n) for n in re.findall(rb'"index":(\d+)', got)]
    assert indexes == list(range(1, sent + 1))
    assert b"resync" not in got
    runs = re.findall(rb'event: run\ndata: {"run_id":\d+,"flow":"chain","state":"(\w+)"', got)
    assert runs == [b"running", b"succeeded"]


class RawEvents:
    """A stream read as bytes, counting a marker as it comes (fast enough for 100,000
    events, unlike parsing each)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.chunks: list[bytes] = []
        self.counts: dict[bytes, int] = {}

    async def read_until(self, marker: bytes, count: int) -> None:
        with anyio.fail_after(WAIT):
            while self.counts.get(marker, 0) < count:
                chunk = await self.response.content.readany()
                assert chunk, "the stream ended"
                tail = self.chunks[-1][-len(marker) :] if self.chunks else b""
                self.chunks.append(chunk)
                for seen in {marker, *self.counts}:
                    self.counts[seen] = self.counts.get(seen, 0) + (tail + chunk).count(seen)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def drain_to_close(sock: socket.socket) -> bytes:
    """Everything the server still sends, until it closes (or resets) the connection."""
    sock.settimeout(WAIT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # read it fast now
    got = b""
    try:
        while chunk := sock.recv(1 << 16):
            got += chunk
    except ConnectionResetError:
        pass  # cut while a write was stuck: what was buffered is lost, as it should be
    return got


async def wait_for(check: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(WAIT):
        for _ in range(int(WAIT / 0.01)):
            if check():
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_streams_end_at_once_when_the_server_stops(make_runner: MakeRunner) -> None:
    # a grace longer than any wait: a server that waited for the streams fails the test
    stopped: list[float] = []
    async with make_runner() as runner, anyio.create_task_group() as readers:
        async with open_api(runner, FLOWS, grace=3 * WAIT, streams=FAST) as api:
            await runner.run(OTHER)  # run 1
            await runner.store.writer.flush()
            for query in ("", "?flow=chain", "?run=1"):
                await readers.start(read_to_end, api, query, stopped)
            began = time.monotonic()
        took = time.monotonic() - began
    assert len(stopped) == 3
    assert took < WAIT
    assert max(stopped) - began < WAIT


async def read_to_end(
    api: Api, query: str, ends: list[float], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    async with stream(api, query) as reader:
        task_status.started()
        await reader.to_end()
        ends.append(time.monotonic())


async def test_fifty_clients_each_get_every_event(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS, streams=FAST) as api:
        async with AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(stream(api)) for _ in range(50)]
            result = await runner.run(CHAIN)
            for reader in readers:
                await reader.until(ended(result.id), "the run's end")
        hub = hub_of(api)
        await wait_for(lambda: hub.count == 0, "the hub forgets the clients that left")
        assert hub.by_run == {}
        assert hub.by_flow == {}
        assert hub.everything == set()
    assert {tuple(steps(reader)) for reader in readers} == {tuple(steps(readers[0]))}
    assert len(steps(readers[0])) == 6


# --- auth and bad input ---


async def test_the_stream_needs_the_token(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}/api/stream") as resp,
    ):
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert hub_of(api).count == 0


@pytest.mark.parametrize(
    ("query", "status", "field", "words"),
    [
        ("?run=abc", 400, "run", "integer"),
        ("?run=0", 400, "run", "at least 1"),
        ("?run=-3", 400, "run", "at least 1"),
        ("?run=1&after=x", 400, "after", "integer"),
        ("?after=5", 400, "after", "needs ?run="),
        ("?run=1&flow=chain", 400, "flow", "send one"),
        ("?flow=", 400, "flow", "1 to 200"),
        ("?flow=" + "x" * 201, 400, "flow", "1 to 200"),
        ("?runs=1", 400, "runs", "unknown query parameter 'runs'"),
        ("?run=77", 404, "run", "no run 77"),
    ],
    ids=[
        "run-text",
        "run-zero",
        "run-negative",
        "after-text",
        "after-alone",
        "run-and-flow",
        "flow-empty",
        "flow-long",
        "unknown",
        "unknown-run",
    ],
)
async def test_bad_filters_get_one_clear_error(
    make_runner: MakeRunner, query: str, status: int, field: str, words: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        await runner.run(OTHER)  # run 1 exists
        await runner.store.writer.flush()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{api.url}/api/stream{query}", headers=api.headers) as resp,
        ):
            answer = await resp.json()
        assert hub_of(api).count == 0
    assert resp.status == status, answer
    assert answer["error"]["field"] == field
    assert words in answer["error"]["message"]
