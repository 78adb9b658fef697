"""Metrics bench: what /metrics costs the engine, and what a scrape costs on a long history
(prints figures, never asserts on time).

    .venv/bin/python bench/metrics.py           # about 30 s on 2 cores
    .venv/bin/python bench/metrics.py --quick

1. W3 of bench/engine.py (N runs of a 5-task chain of no-op tasks, the default config, the
   system clock, the default 50 ms batches), in three settings, interleaved, median of the
   repeats: the bus with no subscriber (the engine builds no per-task event then, as in
   `sluiceway run`), a subscriber that does nothing (the price of building the events), and
   the metrics recorder. `sluiceway serve` always has the SLA monitor listening, so it builds
   the events anyway: what [api] adds there is the recorder against a subscriber doing nothing.
2. The recorder alone: ns per event over a synthetic stream of a run's events.
3. A scrape on a history of 100,000 runs over 50 flows: the store's counts (on the API's
   reader, in a worker thread: the live ones, and the ended runs' full scan) and building
   the text of every series (in a worker thread too when served; timed here in the caller).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime import codec
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.events import Event, EventBus, RunEnded, RunStarted, TaskEnded, TaskStarted
from runtime.service.context import ServiceContext
from runtime.service.metrics.hub import ServiceMetrics
from runtime.service.metrics.recorder import BusRecorder
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, open_store
from runtime.store.gauges import read_ended, read_gauges
from runtime.testing import open_test_runner

DEFAULTS = Config()


async def noop() -> None:
    pass


def chain_flow(length: int = 5) -> Flow:
    flow = Flow("w3")
    previous: list[str] = []
    for i in range(length):
        flow.task(name=f"t{i}", after=previous)(noop)
        previous = [f"t{i}"]
    return flow


async def w3(db: Path, runs: int, subscriber: Callable[[Event], None] | None) -> float:
    """Runs per second of *runs* runs of the chain, one after the other."""
    bus = EventBus()
    if subscriber is not None:
        bus.subscribe(subscriber)
    flow = chain_flow()
    async with open_test_runner(
        db,
        clock=SystemClock(),
        bus=bus,
        max_concurrency=DEFAULTS.max_concurrency,
        flush_interval=DEFAULTS.flush_interval,
    ) as runner:
        await runner.run(flow)  # warm-up
        start = perf_counter()
        for _ in range(runs):
            result = await runner.run(flow)
            if not result.ok:
                raise RuntimeError(f"bench run ended {result.state}")
        return runs / (perf_counter() - start)


def engine_cost(tmp: Path, runs: int, repeats: int) -> None:
    settings: dict[str, Callable[[], Callable[[Event], None] | None]] = {
        "no subscriber": lambda: None,
        "a subscriber doing nothing": lambda: lambda event: None,
        "the metrics recorder": lambda: BusRecorder().on_event,
    }
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for rep in range(repeats):
        for name, make in settings.items():  # interleaved: drift hits every setting alike
            db = tmp / f"w3-{rep}-{len(rates[name])}-{name.replace(' ', '-')}.db"
            rates[name].append(asyncio.run(w3(db, runs, make())))
    base = statistics.median(rates["no subscriber"])
    print(f"W3: {runs} runs of a 5-task chain, default config, median of {repeats}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"  {name:<28} {rate:8.1f} runs/s  {100 * (rate / base - 1):+6.1f}%")
    nothing = statistics.median(rates["a subscriber doing nothing"])
    recorder = statistics.median(rates["the metrics recorder"])
    print(f"  recorder vs a subscriber doing nothing: {100 * (recorder / nothing - 1):+.1f}%")


def recorder_cost(runs: int = 20_000) -> None:
    now = datetime.now(UTC)
    events: list[Event] = []
    for run_id in range(runs):
        events.append(RunStarted(now, run_id, "w3"))
        for i in range(5):
            label = f"t{i}"
            events.append(TaskStarted(now, run_id, "w3", label, label, None, 1))
            done = TaskEnded(now, run_id, "w3", label, label, None, TaskState.SUCCEEDED, 1, 0.01)
            events.append(done)
        events.append(RunEnded(now, run_id, "w3", RunState.SUCCEEDED))
    recorder = BusRecorder()
    start = perf_counter()
    for event in events:
        recorder.on_event(event)
    took = perf_counter() - start
    print(f"recorder alone: {took / len(events) * 1e9:.0f} ns per event ({len(events)} events)")


def fill_history(db: Path, runs: int, flows: int) -> None:
    asyncio.run(_create(db))
    rng = random.Random(13)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    states = ["succeeded"] * 90 + ["failed"] * 8 + ["cancelled"] * 2
    rows = []
    for i in range(runs):
        at = codec.iso(start + timedelta(minutes=5 * i))
        state = "queued" if i >= runs - 20 else rng.choice(states)
        rows.append((f"flow{i % flows:02d}", state, at, at))
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO runs (flow, state, logical_date, created_at) VALUES (?, ?, ?, ?)", rows
        )
    conn.close()


async def _create(db: Path) -> None:
    async with open_store(db):
        pass


def scrape_cost(tmp: Path, runs: int, flows: int, repeats: int) -> None:
    db = tmp / "history.db"
    fill_history(db, runs, flows)
    conn = connect_reader(db)
    now = datetime.now(UTC).timestamp()
    live, history = [], []
    for _ in range(repeats):
        start = perf_counter()
        snapshot = read_gauges(conn, now)
        live.append(perf_counter() - start)
        start = perf_counter()
        read_ended(conn)
        history.append(perf_counter() - start)
    conn.close()
    print(
        f"scrape on {runs} runs over {flows} flows (API reader, worker thread): live counts "
        f"{statistics.median(live) * 1000:.1f} ms (at most every 2 s), ended runs "
        f"{statistics.median(history) * 1000:.1f} ms (at most every 60 s)"
    )
    asyncio.run(_exposition(db, snapshot, flows, repeats))


async def _exposition(db: Path, snapshot: object, flows: int, repeats: int) -> None:
    flow_map = {}
    for i in range(flows):
        flow = Flow(f"flow{i:02d}")
        flow.task()(noop)
        flow_map[flow.name] = flow
    async with open_test_runner(db, clock=SystemClock()) as runner:
        metrics = ServiceMetrics(ServiceContext(Config(db=db), runner, flow_map, epoch=1))
        metrics.snapshot = snapshot  # type: ignore[assignment]
        for flow in flow_map.values():  # every flow has histograms with observations
            await runner.run(flow)
        metrics.attach()
        for flow in flow_map.values():
            await runner.run(flow)
        took, frozen = [], []
        for _ in range(repeats):
            start = perf_counter()
            body, _ = metrics.exposition(None)
            took.append(perf_counter() - start)
            start = perf_counter()
            metrics._freezer.freeze(metrics.snapshot, metrics.ended)
            frozen.append(perf_counter() - start)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    print(
        f"exposition of {series} series: {statistics.median(took) * 1000:.1f} ms median "
        f"(a worker thread when served), {len(body) / 1024:.0f} KiB; copying the numbers "
        f"on the event loop: {statistics.median(frozen) * 1000:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and repeats")
    args = parser.parse_args()
    runs, repeats, history = (50, 3, 20_000) if args.quick else (200, 7, 100_000)
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-") as name:
        tmp = Path(name)
        engine_cost(tmp, runs, repeats)
        recorder_cost()
        scrape_cost(tmp, history, 50, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
