"""What the live stream's tests share: test flows (``chain`` holds its ``load`` task at a gate
the test opens), the fast limits, an open stream as an :class:`SseReader`, a run started in a
task group, bounded waits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio

from runtime import Flow, Run
from runtime.engine.events import Event, RunStarted
from runtime.engine.runner import Runner
from runtime.service.api.streamclient import StreamLimits
from runtime.service.api.streams import StreamHub
from tests.service.api_server import Api
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


async def wait_for(check: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(WAIT):
        for _ in range(int(WAIT / 0.01)):
            if check():
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
