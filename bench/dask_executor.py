"""Dask executor bench: what a task costs on a Dask worker against one in the service, and the
wall time of CPU-bound work on 1 vs 2 local workers (prints figures, never asserts on time).

    .venv/bin/python bench/dask_executor.py            # about a minute on 2 cores
    .venv/bin/python bench/dask_executor.py --quick    # smaller

Per-task overhead: a chain of no-op ``def`` tasks (each waits for the one before, so every
figure is one full round trip) run locally, through ``executor="dask"``, and as bare
``client.submit`` calls (Dask's own floor). Speed-up: a map of 0.1 s CPU-bound tasks on a
LocalCluster of one, then two single-threaded worker processes: work that left the service's
process scales with the workers, which threads in the service would not (the GIL).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import distributed

from runtime.define.flow import Flow
from runtime.testing import open_test_runner


def chain(n: int, executor: str) -> Flow:
    flow = Flow(f"chain_{executor}", executor=executor)
    previous: Any = None
    for i in range(n):

        def step() -> int:
            return 1

        previous = flow.task(name=f"t{i}", after=[previous] if previous else [])(step)
    return flow


def burn(seconds: float) -> float:
    """Spin the CPU for *seconds* of this thread's CPU time."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    return seconds


def cpu_map(n: int) -> Flow:
    flow = Flow("cpu")

    @flow.task
    def items() -> list[int]:
        return list(range(n))

    @flow.task(executor="dask", map="items")
    def work(items: int) -> float:
        return burn(0.1)

    return flow


async def cluster(workers: int) -> distributed.LocalCluster:
    return await distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        asynchronous=True,
        dashboard_address=":0",
        host="127.0.0.1",
    )


async def run_flow(db: Path, flow: Flow, address: str | None) -> float:
    executors = {"dask": {"address": address}} if address else {}
    async with open_test_runner(db, executors=executors, max_concurrency=64) as runner:
        if address:  # connect (and ship code) before the clock starts
            await runner.run(chain(1, "dask"))
        began = time.perf_counter()
        result = await runner.run(flow)
        took = time.perf_counter() - began
        assert result.state == "succeeded", result
        return took


async def bare_submits(address: str, n: int) -> float:
    async with distributed.Client(address, asynchronous=True) as client:  # type: ignore[no-untyped-call]
        await client.submit(int, 1, pure=False)
        began = time.perf_counter()
        for _ in range(n):
            await client.submit(int, 1, pure=False)
        return time.perf_counter() - began


async def main_async(quick: bool) -> None:
    n_chain = 20 if quick else 50
    n_cpu = 40 if quick else 200
    folder = Path(tempfile.mkdtemp(prefix="sluiceway-bench-dask-"))
    print(
        f"sluiceway dask bench: {len(os.sched_getaffinity(0))} cpus, dask {importlib.metadata.version('dask')}"
    )
    one = await cluster(1)
    try:
        local = await run_flow(folder / "a.db", chain(n_chain, "local"), None)
        remote = await run_flow(folder / "b.db", chain(n_chain, "dask"), one.scheduler_address)
        bare = await bare_submits(one.scheduler_address, n_chain)
        print(f"per task, a chain of {n_chain} no-op def tasks (one at a time):")
        print(f"  local (service thread)     {local / n_chain * 1000:8.2f} ms")
        print(f"  executor='dask'            {remote / n_chain * 1000:8.2f} ms")
        print(f"  bare client.submit (floor) {bare / n_chain * 1000:8.2f} ms")
        print(f"  dask overhead over local   {(remote - local) / n_chain * 1000:8.2f} ms/task")
        wall_one = await run_flow(folder / "c.db", cpu_map(n_cpu), one.scheduler_address)
    finally:
        await one.close()  # type: ignore[misc]
    two = await cluster(2)
    try:
        wall_two = await run_flow(folder / "d.db", cpu_map(n_cpu), two.scheduler_address)
    finally:
        await two.close()  # type: ignore[misc]
    print(f"{n_cpu} CPU-bound 0.1 s tasks (map), single-threaded worker processes:")
    print(f"  1 worker   {wall_one:7.2f} s   (ideal {n_cpu * 0.1:.1f} s)")
    print(f"  2 workers  {wall_two:7.2f} s   speed-up {wall_one / wall_two:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args(argv)
    anyio.run(main_async, args.quick)
    return 0


if __name__ == "__main__":  # workers are spawned processes: they import this file too
    sys.exit(main())
