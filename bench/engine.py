"""Engine bench: each figure beside a floor measured in the same process, with the ratio.

Run from the repository root (prints figures, never asserts on time):

    .venv/bin/python bench/engine.py              # full pass, about 15 s on 2 cores
    .venv/bin/python bench/engine.py --quick      # smaller, faster pass
    .venv/bin/python bench/engine.py --json       # figures as JSON on stdout, table on stderr
    .venv/bin/python bench/engine.py --profile w1 # cProfile of our side of W1 (or w3)

Ours is ``open_test_runner`` with the system clock and the store's default 50 ms batches; the
floor (bench/floor.py) is bare asyncio tasks writing the same state changes with aiosqlite
under the store's pragmas, one executemany transaction per 50 ms.

Every workload runs under the default configuration (``Config()``: global limit 32) unless its
label names the setting it changes and why: W1 and the mapping rows are printed a second time
unthrottled (limit 1000), and W4 measures waiting under a limit of 20.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import pstats
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import anyio
import floor
from cold import cold_start
from report import Figure, machine, table, to_json

from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.store.schema import PRAGMAS
from runtime.testing import open_test_runner

if TYPE_CHECKING:
    from runtime.engine.runner import Runner

DEFAULTS = Config()
FLUSH = DEFAULTS.flush_interval  # the floor's batch interval; ours gets the same (the default)
DEFAULT_LIMIT = DEFAULTS.max_concurrency  # the global limit users run with (32)
# W1 and mapping are also printed at a limit high enough never to throttle (not the default):
# the cost of the engine without the global limit's bookkeeping
UNTHROTTLED = 1000
W4_LIMIT = 20  # W4 measures waiting under a limit (not the default)
NOTES = (
    "floor: bare asyncio tasks + aiosqlite, same pragmas (WAL, synchronous=FULL), one executemany"
    f" transaction per {FLUSH * 1000:.0f} ms; ours: flush_interval={FLUSH}, SystemClock,"
    f" default global limit {DEFAULT_LIMIT} unless a row says otherwise.\n"
    "cold: fresh processes, median after a warm-up that fills a bytecode cache; floors: a"
    " python running the floor's 5-task chain, and `python -c pass`."
)


@dataclass(frozen=True)
class Sizes:
    repeats: int = 5
    w1: int = 1000
    mapped: tuple[int, ...] = (1000, 10000)
    chain: int = 200
    w3_runs: int = 200
    w4_tasks: int = 200
    cold_trials: int = 5


FULL = Sizes()
QUICK = Sizes(repeats=1, mapped=(1000,), w3_runs=50, cold_trials=3)


async def noop() -> None:
    return None


def independent_flow(name: str, n: int, fn: floor.TaskFn) -> Flow:
    flow = Flow(name)
    for i in range(n):
        flow.task(name=f"t{i}")(fn)
    return flow


def chain_flow(name: str, fns: Sequence[floor.TaskFn]) -> Flow:
    flow = Flow(name)
    for i, fn in enumerate(fns):
        flow.task(name=f"t{i}", after=[f"t{i - 1}"] if i else [])(fn)
    return flow


def mapped_flow(n: int) -> Flow:
    flow = Flow(f"mapped{n}")

    async def items() -> list[int]:
        return list(range(n))

    async def work(items: int) -> None:
        return None

    flow.task(items)
    flow.task(map="items")(work)
    return flow


def stamped_chain(n: int) -> tuple[list[floor.TaskFn], list[list[float]]]:
    """No-op tasks that record their start and end; returns them and the stamps."""
    stamps = [[0.0, 0.0] for _ in range(n)]

    def step(slot: list[float]) -> floor.TaskFn:
        async def fn() -> None:
            slot[0] = perf_counter()
            slot[1] = perf_counter()

        return fn

    return [step(s) for s in stamps], stamps


def hops(stamps: list[list[float]]) -> list[float]:
    """End of each task to the start of the next, in seconds."""
    return [stamps[i][0] - stamps[i - 1][1] for i in range(1, len(stamps))]


async def _committed_chain(store: floor.FloorStore, fns: Sequence[floor.TaskFn]) -> None:
    """One floor chain run, then wait for its commit (as our runner does per run)."""
    await floor.chain(store, fns)
    await store.flush()


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


class Bench:
    """Runs each workload on our side and on the floor, in fresh SQLite files under *tmp*."""

    def __init__(self, tmp: Path, sizes: Sizes, profiler: cProfile.Profile | None = None) -> None:
        self.tmp = tmp
        self.sizes = sizes
        self.profiler = profiler
        self._files = itertools.count()

    def _db(self, side: str) -> Path:
        return self.tmp / f"{side}-{next(self._files)}.db"

    @contextlib.asynccontextmanager
    async def ours(self, limit: int) -> AsyncIterator[Runner]:
        db = self._db("ours")
        async with open_test_runner(
            db, clock=SystemClock(), max_concurrency=limit, flush_interval=FLUSH
        ) as runner:
            yield runner

    def floor_store(self) -> contextlib.AbstractAsyncContextManager[floor.FloorStore]:
        return floor.open_floor(self._db("floor"), PRAGMAS, FLUSH)

    @contextlib.contextmanager
    def _measured(self) -> Iterator[None]:
        if self.profiler is None:
            yield
            return
        with self.profiler:
            yield

    async def run_ours(self, runner: Runner, flow: Flow, times: int = 1) -> float:
        """Wall time of *times* runs of *flow*, one after the other; each must succeed."""
        with self._measured():
            start = perf_counter()
            for _ in range(times):
                result = await runner.run(flow)
                if not result.ok:
                    raise RuntimeError(f"bench flow {flow.name} ended {result.state}: {result}")
            return perf_counter() - start

    @staticmethod
    async def run_floor(
        store: floor.FloorStore, work: Callable[[], Awaitable[None]], times: int = 1
    ) -> float:
        start = perf_counter()
        for _ in range(times):
            await work()
        await store.flush()
        return perf_counter() - start

    # --- workloads ---

    async def w1(self) -> list[Figure]:
        """W1 under the default limit (the headline), then unthrottled, beside one floor."""
        n, reps = self.sizes.w1, self.sizes.repeats
        flow, fns = independent_flow("w1", n, noop), [noop] * n
        ours: dict[int, list[float]] = {DEFAULT_LIMIT: [], UNTHROTTLED: []}
        base = []
        for _ in range(reps):
            for limit, times in ours.items():
                async with self.ours(limit) as runner:
                    times.append(await self.run_ours(runner, flow) / n)
            async with self.floor_store() as store:
                base.append(await self.run_floor(store, partial(floor.independent, store, fns)) / n)
        o, u = (statistics.median(ours[k]) * 1e6 for k in (DEFAULT_LIMIT, UNTHROTTLED))
        f = statistics.median(base) * 1e6
        return [
            Figure(
                "w1",
                f"W1 {n:,} no-op tasks, default config (limit {DEFAULT_LIMIT})",
                "us/task",
                o,
                f,
                "<= 3x floor",
                o <= 3 * f,
            ),
            Figure(
                "w1_unthrottled",
                f"W1 unthrottled: limit {UNTHROTTLED}, not the default (no limit bookkeeping)",
                "us/task",
                u,
                f,
                "info",
                None,
            ),
        ]

    async def mapped(self, w1: Sequence[Figure]) -> list[Figure]:
        """Mapping under the default limit, then unthrottled; compared with W1 at each."""
        out = []
        w1_at = {DEFAULT_LIMIT: w1[0].ours, UNTHROTTLED: w1[1].ours}
        for n in self.sizes.mapped:
            reps = self.sizes.repeats if n <= 1000 else (self.sizes.repeats + 1) // 2
            flow, fns = mapped_flow(n), [noop] * n
            ours: dict[int, list[float]] = {DEFAULT_LIMIT: [], UNTHROTTLED: []}
            base = []
            for _ in range(reps):
                for limit, times in ours.items():
                    async with self.ours(limit) as runner:
                        times.append(await self.run_ours(runner, flow) / n)
                async with self.floor_store() as store:
                    run = partial(floor.independent, store, fns)
                    base.append(await self.run_floor(store, run) / n)
            f = statistics.median(base) * 1e6
            for limit, times in ours.items():
                o = statistics.median(times) * 1e6
                note = f"info: {o / w1_at[limit]:.2f}x W1"
                if limit == DEFAULT_LIMIT:
                    key, label = f"mapped_{n}", f"mapped over {n:,} items, default (limit {limit})"
                else:
                    key = f"mapped_{n}_unthrottled"
                    label = f"mapped over {n:,} items, unthrottled: limit {limit}, not the default"
                out.append(Figure(key, label, "us/inst", o, f, note, None))
        return out

    async def w2(self) -> list[Figure]:
        n = self.sizes.chain
        fns, stamps = stamped_chain(n)
        flow = chain_flow("w2", fns)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(self.sizes.repeats):
            async with self.ours(DEFAULT_LIMIT) as runner:
                await self.run_ours(runner, flow)
            ours += hops(stamps)
            async with self.floor_store() as store:
                await self.run_floor(store, partial(floor.chain, store, fns))
            base += hops(stamps)
        om, fm = statistics.median(ours) * 1e6, statistics.median(base) * 1e6
        o95, f95 = p95(ours) * 1e6, p95(base) * 1e6
        label = f"W2 {n}-task chain, default config"
        return [
            Figure("w2_median", f"{label}: median hop", "us", om, fm, "<= 1000 us", om <= 1000),
            Figure("w2_p95", f"{label}: p95 hop", "us", o95, f95, "-", None),
        ]

    async def w3(self) -> list[Figure]:
        n, reps = self.sizes.w3_runs, min(self.sizes.repeats, 3)
        fns = [noop] * 5
        flow = chain_flow("w3", fns)
        ours, base, durable = [], [], []
        for _ in range(reps):
            async with self.ours(DEFAULT_LIMIT) as runner:
                await runner.run(flow)  # warm-up: first-run costs are cold start's business
                ours.append(n / await self.run_ours(runner, flow, n))
            async with self.floor_store() as store:
                await floor.chain(store, fns)
                run = partial(floor.chain, store, fns)
                base.append(n / await self.run_floor(store, run, n))
            async with self.floor_store() as store:
                committed = partial(_committed_chain, store, fns)
                await committed()
                durable.append(n / await self.run_floor(store, committed, n))
        o, f, d = (statistics.median(x) for x in (ours, base, durable))
        # The target compares with the floor that commits each run's row before running it,
        # as Sluiceway must (idempotency keys, nothing lost on a crash); the floor that never
        # waits for a commit is printed for scale.
        label = f"W3 {n} runs of a 5-task chain, default config (floor commits each run)"
        loose = "W3, floor never waits for a commit"
        return [
            Figure("w3", label, "runs/s", o, d, "<= 3x floor", o * 3 >= d, lower_is_better=False),
            Figure("w3_uncommitted", loose, "runs/s", o, f, "info", None, lower_is_better=False),
        ]

    async def w4(self) -> list[Figure]:
        n, reps = self.sizes.w4_tasks, min(self.sizes.repeats, 2)

        async def ours_sleep() -> None:
            await anyio.sleep(0.1)

        async def floor_sleep() -> None:
            await asyncio.sleep(0.1)

        flow, fns = independent_flow("w4", n, ours_sleep), [floor_sleep] * n
        ours, base = [], []
        for _ in range(reps):
            async with self.ours(W4_LIMIT) as runner:
                ours.append(await self.run_ours(runner, flow))
            async with self.floor_store() as store:
                run = partial(floor.limited, store, fns, W4_LIMIT)
                base.append(await self.run_floor(store, run))
        o, f = statistics.median(ours), statistics.median(base)
        label = f"W4 {n} x sleep(0.1), limit {W4_LIMIT} (not the default: waiting under a limit)"
        return [Figure("w4", label, "s", o, f, "<= 1.05 s (ideal 1.0)", o <= 1.05)]


async def measure(bench: Bench) -> list[Figure]:
    figures = await bench.w1()
    figures += await bench.mapped(figures)
    figures += await bench.w2()
    figures += await bench.w3()
    figures += await bench.w4()
    return figures


def profile(workload: str, sizes: Sizes, tmp: Path, top: int) -> None:
    """Print where our side of *workload* spends its time (loop thread only)."""
    profiler = cProfile.Profile()
    bench = Bench(tmp, replace(sizes, repeats=3), profiler)
    asyncio.run(bench.w1() if workload == "w1" else bench.w3())
    for key in ("tottime", "cumulative"):
        print(f"--- our side of {workload.upper()}, by {key} ---")
        pstats.Stats(profiler).strip_dirs().sort_stats(key).print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--json", action="store_true", help="figures as JSON on stdout")
    parser.add_argument("--profile", choices=["w1", "w3"], help="cProfile our side of W1 or W3")
    parser.add_argument("--top", type=int, default=30, help="rows per --profile listing")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-") as name:
        tmp = Path(name)
        if args.profile:
            profile(args.profile, sizes, tmp, args.top)
            return 0
        start = perf_counter()
        bench = Bench(tmp, sizes)
        figures = asyncio.run(measure(bench))
        figures += cold_start(tmp, sizes.cold_trials)
        took = perf_counter() - start
    info = machine()
    text = table(figures, info, mode, NOTES) + f"\nbench took {took:.1f} s"
    if args.json:
        print(text, file=sys.stderr)
        settings = {
            "flush_interval": FLUSH,
            "default_limit": DEFAULT_LIMIT,
            "unthrottled_limit": UNTHROTTLED,
            "w4_limit": W4_LIMIT,
            **asdict(sizes),
        }
        print(to_json(figures, info, mode, settings))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
