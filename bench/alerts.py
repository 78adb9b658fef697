"""Alerts bench (issue 12 §8): prints, never asserts.

    python bench/alerts.py

1. Engine throughput (W3: runs of a 5-task chain) without alerts; with failures routed
   (W3 never fails: the cost of listening); and with every run's start and success routed
   (two alerts a run, the worst case), all to a webhook endpoint on 127.0.0.1 that never
   answers (target: within 5%). Wall time and CPU time per run: on a shared machine the
   wall figure swings with other processes' load, CPU time much less. Paired blocks of 200
   runs, the cases in turn on one database: separate runs per case (a fresh database each)
   differed by up to 20% from one pass to the next on a loaded machine.
2. Delivery latency from the state change (run recorded and published) to the endpoint
   receiving the request, p50/p99 over 50 failures (target: <= 100 ms / <= 500 ms beyond the
   batch interval).

Every W3 case has the SLA monitor subscribed to the bus, as the service always has: like with
like, the engine builds its per-task events in the baseline too, and the figures are the cost
of alerts alone.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, process_time

import anyio
from aiohttp import web

from runtime import codec
from runtime.alerting import AlertRoute
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.events import RunEnded
from runtime.engine.runner import Runner
from runtime.scheduling.sla import run_sla_monitor
from runtime.service.alerts import AlertHub, build_routing
from runtime.states import RunState
from runtime.store.rows import RunRow
from runtime.testing import open_test_runner

BLOCK = 200  # runs per block
BLOCKS = 8  # blocks per case
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


async def w3(tmp: Path) -> dict[str, list[tuple[float, float]]]:
    """Per case, per block of BLOCK runs: runs per second (wall) and CPU milliseconds per run
    (this process, every thread: the figure other processes on the machine disturb least).

    Paired: one runner and one database for every case, the cases' blocks in turn (each one
    first in turn), so a drift of the machine and the database's growth hit every case
    alike. A case with alerts has its hub listening during its blocks only (as a service
    whose config routes nothing does not listen); each block ends with a flush, so its alert
    rows are written in its own time."""
    flow = chain()
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    async with (
        endpoint(hang=True) as (url, _),
        open_test_runner(tmp / "w3.db", clock=SystemClock(), flush_interval=FLUSH) as runner,
        sla_monitor(runner, flow),
        anyio.create_task_group() as tg,
    ):
        hubs: dict[str, AlertHub] = {}
        for name, events in CASES.items():
            if events:
                config = webhook_config(url, *events)
                hubs[name] = AlertHub(
                    runner.store, runner.clock, config, build_routing(config), dict
                )
                await tg.start(hubs[name].sender.run)
        await runner.run(flow)  # warm-up
        names = list(CASES)
        for i in range(BLOCKS * len(names)):
            name = names[(i + i // len(names)) % len(names)]
            hub = hubs.get(name)
            if hub is not None:
                hub.attach(runner.bus)
            start, cpu = perf_counter(), process_time()
            for _ in range(BLOCK):
                await runner.run(flow)
            await runner.store.flush()
            figures[name].append(
                (BLOCK / (perf_counter() - start), (process_time() - cpu) * 1000 / BLOCK)
            )
            if hub is not None:
                hub.detach()
        tg.cancel_scope.cancel()
    return figures


@asynccontextmanager
async def sla_monitor(runner: Runner, flow: Flow) -> AsyncIterator[None]:
    """The SLA monitor subscribed, as in the service (the flow has no SLA: it watches nothing)."""
    async with anyio.create_task_group() as tg:
        lookup = {flow.name: flow}.get
        await tg.start(run_sla_monitor, runner.bus, runner.store, runner.clock, lookup)
        yield
        tg.cancel_scope.cancel()


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


CASES = {
    "no alerts": (),
    "run.failed routed (none fire)": ("run.failed", "task.failed"),
    "every run alerts twice": ("run.started", "run.succeeded"),
}


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        figures = await w3(tmp)
        took = sorted(await latency(tmp))
    print(
        f"alerts bench (batch interval {FLUSH * 1000:.0f} ms), W3: runs of a 5-task chain, alerts"
    )
    print("to a webhook endpoint on 127.0.0.1 that never answers; medians of")
    print(f"{BLOCKS} blocks of {BLOCK} runs per case, the cases' blocks in turn on one database")
    print("(target: within 5% of no alerts); the SLA monitor is subscribed in every case, as in")
    print("the service, so the engine builds its per-task events in every case")
    base_rate = statistics.median(r for r, _ in figures["no alerts"])
    base_cpu = statistics.median(c for _, c in figures["no alerts"])
    for name, got in figures.items():
        rate = statistics.median(r for r, _ in got)
        cpu = statistics.median(c for _, c in got)
        print(
            f"  {name:<30} {rate:7.1f} runs/s ({100 * (rate - base_rate) / base_rate:+5.1f}%)"
            f"  {cpu:6.2f} ms CPU/run ({100 * (cpu - base_cpu) / base_cpu:+5.1f}%)"
        )
    p50 = took[len(took) // 2] * 1000
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))] * 1000
    print(f"delivery latency, state change -> endpoint received, {len(took)} alerts:")
    print(
        f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets: <= {FLUSH * 1000 + 100:.0f} ms /"
        f" <= {FLUSH * 1000 + 500:.0f} ms incl. the batch interval)"
    )


if __name__ == "__main__":
    anyio.run(main)
