"""``GET /api/stream`` and its clients: a slow client dropped without hurting the others or the
engine, fifty clients, streams ending when the server stops, auth and bad input."""

from __future__ import annotations

import re
import socket
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import aiohttp
import anyio
import pytest

from runtime.engine.events import TaskEnded
from runtime.service.api.streamclient import StreamLimits
from runtime.states import TaskState
from tests.conftest import MakeRunner
from tests.service.api_server import Api, open_api
from tests.service.stream_helpers import (
    CHAIN,
    FAST,
    FLOWS,
    OTHER,
    ended,
    hub_of,
    steps,
    stream,
    wait_for,
)
from tests.waiting import WAIT

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
