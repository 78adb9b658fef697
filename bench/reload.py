"""Reload bench: what the child-process check costs per reload, and the event loop's lag while
a slow flow file imports (prints figures, never asserts).

    .venv/bin/python bench/reload.py            # about half a minute on 2 cores
    .venv/bin/python bench/reload.py --quick

* check: ``probe_files`` on the sample flows and on a folder of small generated flow files:
  the wall time a reload waits for before it imports in-process (off the loop either way);
* load: ``load_flows`` without and with ``isolate=True``;
* lag: a 10 ms ticker on the loop while a file that sleeps 2 s at import is loaded, on the loop
  (``load_flows``, as reloads did before) and off it (``load_flows_off_loop``, as they do now).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import anyio

from runtime.define.loader import flow_files, load_flows, load_flows_off_loop
from runtime.define.probe import probe_files

REPO = Path(__file__).resolve().parents[1]
SMALL = """
from runtime import Flow

flow = Flow("small_{n}")


@flow.task
def extract() -> int:
    return {n}


@flow.task
def load(extract: int) -> int:
    return extract
"""
SLOW = """
import time

from runtime import Flow

time.sleep({seconds})
flow = Flow("slow")


@flow.task
def only() -> None:
    return None
"""


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = perf_counter()
        fn()
        out.append(perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"median {statistics.median(values) * 1000:7.1f} ms   "
        f"min {values[0] * 1000:7.1f}   max {values[-1] * 1000:7.1f}"
    )


def bench_check(folder: Path, label: str, repeats: int) -> None:
    files = flow_files(folder)
    print(f"{label} ({len(files)} files)")
    print(f"  check in a child:     {ms(timed(lambda: probe_files(files), repeats))}")
    print(f"  load, in-process:     {ms(timed(lambda: load_flows(folder), repeats))}")
    print(f"  load, isolate=True:   {ms(timed(lambda: load_flows(folder, isolate=True), repeats))}")


async def lag_during(load: Callable[[], object], *, off_loop: bool) -> tuple[float, float, int]:
    """Largest and p99 lateness of a 10 ms ticker while *load* runs; ticks counted."""
    late: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = perf_counter() + 0.01
            await anyio.sleep(0.01)
            late.append(max(0.0, perf_counter() - due))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.05)
        if off_loop:
            await load()  # type: ignore[misc]
        else:
            load()
        done.set()
    late.sort()
    return late[-1], late[int(len(late) * 0.99) - 1], len(late)


def bench_lag(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "slow.py").write_text(SLOW.format(seconds=seconds))
        (folder / "small.py").write_text(SMALL.format(n=1))
        print(f"loop lag while a file sleeps {seconds:g}s at import (10 ms ticker)")
        for label, off in (("on the loop (before)", False), ("off the loop (now)", True)):
            start = perf_counter()
            if off:
                worst, p99, ticks = anyio.run(
                    lambda: lag_during(lambda: load_flows_off_loop(folder), off_loop=True)
                )
            else:
                worst, p99, ticks = anyio.run(
                    lambda: lag_during(lambda: load_flows(folder), off_loop=False)
                )
            took = perf_counter() - start
            print(
                f"  {label:<22} max lag {worst * 1000:7.1f} ms   p99 {p99 * 1000:6.1f} ms   "
                f"{ticks} ticks in {took:.2f}s"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")
    bench_check(REPO / "sample_flows", "sample_flows", repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in range(20):
            (folder / f"small_{n:02}.py").write_text(SMALL.format(n=n))
        bench_check(folder, "20 small flow files", repeats)
    bench_lag(2.0)


if __name__ == "__main__":
    main()
