"""Alerts bench (issue 12 §8): prints, never asserts.

    python bench/alerts.py

1. Engine throughput (W3: 200 runs of a 5-task chain) without alerts, and with every run's
   success and every task event routed to a webhook endpoint on 127.0.0.1 that never answers
   (target: within 5%).
2. Delivery latency from the state change (run recorded and published) to the endpoint
   receiving the request, p50/p99 over 50 failures (target: <= 100 ms / <= 500 ms beyond the
   batch interval).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import anyio
from aiohttp import web

from runtime import codec
from runtime.alerting import AlertRoute
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.events import RunEnded
from runtime.engine.runner import Runner
from runtime.service.alerts import AlertHub, build_routing
from runtime.states import RunState
from runtime.store.rows import RunRow
from runtime.testing import open_test_runner

RUNS = 200
REPEATS = 3
LATENCY_SAMPLES = 50
FLUSH = Config().flush_interval


async def noop() -> None:
    pass


def chain() -> Flow:
    flow = Flow("w3")
    for i in range(5):
        flow.task(name=f"t{i}", after=[f"t{i - 1}"] if i else [])(noop)
    return flow


@asynccontextmanager
async def endpoint(hang: bool) -> AsyncIterator[tuple[str, list[float]]]:
    """A local webhook endpoint: its URL, and the perf_counter() of each request's arrival."""
    arrived: list[float] = []
    never = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        arrived.append(perf_counter())
        await request.read()
        if hang:
            await never.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", arrived
    finally:
        never.set()
        await runner.cleanup()


@asynccontextmanager
async def alerting(runner: Runner, config: Config) -> AsyncIterator[AlertHub]:
    hub = AlertHub(runner.store, runner.clock, config, build_routing(config), dict)
    hub.attach(runner.bus)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.sender.run)
        yield hub
        hub.detach()
        tg.cancel_scope.cancel()


def webhook_config(url: str, *events: str) -> Config:
    route = AlertRoute(tuple(events), ("webhook:bench",))
    return Config(alerts=(route,), notifiers={"webhook:bench": {"url": url}}, alert_timeout=60.0)


async def w3(tmp: Path, with_alerts: bool) -> float:
    flow = chain()
    async with (
        endpoint(hang=True) as (url, _),
        open_test_runner(
            tmp / f"w3-{with_alerts}-{perf_counter()}.db", clock=SystemClock(), flush_interval=FLUSH
        ) as runner,
    ):
        config = webhook_config(url, "run.succeeded", "run.started", "task.failed")
        async with contextlib_optional(with_alerts, runner, config):
            await runner.run(flow)  # warm-up
            start = perf_counter()
            for _ in range(RUNS):
                await runner.run(flow)
            return RUNS / (perf_counter() - start)


@asynccontextmanager
async def contextlib_optional(on: bool, runner: Runner, config: Config) -> AsyncIterator[None]:
    if not on:
        yield
        return
    async with alerting(runner, config):
        yield


async def latency(tmp: Path) -> list[float]:
    now = datetime.now(UTC)
    took = []
    async with (
        endpoint(hang=False) as (url, arrived),
        open_test_runner(tmp / "latency.db", clock=SystemClock(), flush_interval=FLUSH) as runner,
    ):
        store = runner.store
        async with alerting(runner, webhook_config(url, "run.failed")):
            for _ in range(LATENCY_SAMPLES):
                run_id, _ = await store.create_run(
                    flow="x", params={}, trigger={}, logical_date=now, created_at=now
                )
                seen = len(arrived)
                start = perf_counter()
                store.put_run(RunRow(run_id, "failed", codec.iso(now), codec.iso(now), "boom"))
                runner.bus.publish(RunEnded(now, run_id, "x", RunState.FAILED, "boom"))
                with anyio.fail_after(30):
                    while len(arrived) == seen:  # noqa: ASYNC110 - the server appends
                        await anyio.sleep(0.001)
                took.append(arrived[seen] - start)
    return took


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        plain = [await w3(tmp, False) for _ in range(REPEATS)]
        alerted = [await w3(tmp, True) for _ in range(REPEATS)]
        took = sorted(await latency(tmp))
    p, a = statistics.median(plain), statistics.median(alerted)
    print(f"alerts bench (batch interval {FLUSH * 1000:.0f} ms)")
    print(f"  W3 {RUNS} runs of a 5-task chain, no alerts:            {p:8.1f} runs/s")
    print(f"  W3 with run.started/succeeded routed to a hung endpoint: {a:8.1f} runs/s")
    print(f"  difference: {100 * (a - p) / p:+.1f}% (target: within 5%)")
    p50 = took[len(took) // 2] * 1000
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))] * 1000
    print(f"  delivery latency state change -> endpoint, {len(took)} alerts:")
    print(
        f"    p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets: <= {FLUSH * 1000 + 100:.0f} ms /"
        f" <= {FLUSH * 1000 + 500:.0f} ms incl. the batch interval)"
    )


if __name__ == "__main__":
    anyio.run(main)
