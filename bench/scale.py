"""Growth bench: how the cost grows with the work, at sizes x10 apart.

Run from the repository root (prints figures, never asserts on time):

    .venv/bin/python bench/scale.py            # full pass, a few minutes on 2 cores
    .venv/bin/python bench/scale.py --quick    # sizes /10, about a minute
    .venv/bin/python bench/scale.py --only schedules   # one series: flows, history, schedules

Three series, each printed with the ratio of successive sizes: linear work shows about x10
per x10, constant work about x1; a ratio of x30 or more per x10 (n^1.5) is flagged
SUPER-LINEAR.

* flow files of N independent ``async def`` tasks: load + validate in this process
  (``load_flows``; also with one more task after all N), ``sluiceway run`` as a fresh process under the default config (and its
  peak RSS, from ``wait4``), ``sluiceway show ID --json`` as a fresh process and in process.
* a history of N ended runs (one task and one attempt each, over 10 flows), written straight
  into a database made by the store's migrations: ``sluiceway runs --limit 50``,
  ``sluiceway show ID`` of one run, ``sluiceway flows``, and ``sluiceway serve`` restarted to
  READY=1 (NOTIFY_SOCKET, as bench/scheduler.py does).
* N schedules, ``every("1h")`` spread evenly over the hour: the scheduler's start-up pass
  (plans every trigger) and a pass at an instant where one trigger is due, on a fake clock
  with the real store; spread schedules make N such passes an hour, so the scheduler's work
  per hour is N times a pass (its CPU time: the wall time of a pass is mostly the commit's
  fsync, and on a shared machine, other processes).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import anyio
from cli import Case, flow_source
from cold import bench_env
from scheduler import SERVE_FLOW, time_to_ready

from runtime import codec
from runtime.clock import FakeClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.loader import load_flows
from runtime.define.triggers import every
from runtime.scheduling.agenda import Agenda
from runtime.scheduling.ticker import tick
from runtime.store import connect_reader, open_store, queries
from runtime.testing import open_test_runner

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUPER = 10**1.5  # per x10: n^1.5 or worse is flagged
FILL_CAP = 120.0  # seconds: a history whose fill would take longer is not made


@dataclass(frozen=True)
class Sizes:
    tasks: tuple[int, ...] = (1000, 10000)
    history: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    schedules: tuple[int, ...] = (100, 1000, 10000)
    repeats: int = 3  # of the cheap measurements (in-process, short commands)
    passes: int = 40  # steady scheduler passes timed per size


FULL = Sizes()
QUICK = Sizes(tasks=(100, 1000), history=(1000, 10_000, 100_000), schedules=(10, 100, 1000))


@dataclass
class Row:
    """One measured quantity at each size of its series (``None``: not measured)."""

    label: str
    unit: str  # "ms", "s" or "MB"
    values: list[float | None] = field(default_factory=list)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:,.1f} ms" if value < 1 else f"{value * 1000:,.0f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,.0f} {unit}"


def print_series(title: str, sizes: Sequence[int], rows: Sequence[Row]) -> list[str]:
    """Print a series as a table with the ratio between successive sizes; return the labels
    of the rows flagged super-linear."""
    flagged = []
    head = [title, *(f"{n:,}" for n in sizes)]
    head += [f"x{sizes[i + 1] // sizes[i]} ratio" for i in range(len(sizes) - 1)]
    grid = [head]
    for row in rows:
        cells = [row.label, *(_fmt(v, row.unit) for v in row.values)]
        for i in range(len(sizes) - 1):
            a, b = row.values[i], row.values[i + 1]
            if a is None or b is None or a <= 0:
                cells.append("-")
                continue
            ratio, step = b / a, sizes[i + 1] / sizes[i]
            worst = ratio >= step**1.5 and row.unit != "MB"
            cells.append(f"x{ratio:.1f}" + (" SUPER-LINEAR" if worst else ""))
            if worst:
                flagged.append(f"{row.label} ({sizes[i]:,} -> {sizes[i + 1]:,}: x{ratio:.1f})")
        grid.append(cells)
    widths = [max(len(r[i]) for r in grid) for i in range(len(head))]
    print()
    for r in grid:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        print("  ".join(cells), flush=True)
    return flagged


def median_of(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


class Procs:
    """Fresh `sluiceway` processes under the default config, cwd and bytecode cache in *tmp*."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = bench_env(tmp)
        self.exe = str(Path(sys.executable).parent / "sluiceway")

    def run(self, *args: str) -> tuple[float, float]:
        """Wall seconds and peak RSS (MB, from wait4) of ``sluiceway ARGS``; raises on a
        non-zero exit."""
        log = self.tmp / "proc.log"
        with log.open("wb") as out:
            start = perf_counter()
            proc = subprocess.Popen(
                [self.exe, *args], cwd=self.tmp, env=self.env, stdout=out, stderr=out
            )
            _, status, usage = os.wait4(proc.pid, 0)
            took = perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sluiceway {' '.join(args)} exited {proc.returncode}: {tail}")
        return took, usage.ru_maxrss / 1024

    def time(self, *args: str, repeats: int = 3) -> float:
        """Median wall seconds of ``sluiceway ARGS`` after one untimed warm-up."""
        self.run(*args)
        return median_of(lambda: self.run(*args)[0], repeats)


# --- flow files ---


def join_source(n: int) -> str:
    """A flow file of *n* independent tasks and one task after all of them (a fan-in)."""
    case = Case(f"join_{n}", "independent", n)
    names = ", ".join(f'"t{i}"' for i in range(n))
    join = f"@{case.key}.task(after=[{names}])\nasync def join() -> None:\n    return None\n"
    return flow_source(case) + "\n\n" + join


def load_time(folder: Path, repeats: int) -> float:
    """Median seconds of ``load_flows`` (import and check) plus building each flow's graph,
    after a first load that fills the bytecode cache, as a second load finds it."""

    def once() -> float:
        start = perf_counter()
        loaded = load_flows(folder)
        for flow in loaded.flows.values():
            flow.validate()
        took = perf_counter() - start
        if loaded.problems:
            raise RuntimeError("\n".join(loaded.problems))
        return took

    once()
    return median_of(once, repeats)


def flow_files(tmp: Path, procs: Procs, sizes: Sizes) -> list[str]:
    load = Row("load + validate (load_flows, in process)", "ms")
    load_join = Row("  the same and one task after all of them", "ms")
    run = Row("`sluiceway run` (fresh process, default config)", "s")
    rss = Row("  peak RSS of that process", "MB")
    show = Row("`sluiceway show ID --json` (fresh process)", "ms")
    show_in = Row("get_run + JSON of that run (in process)", "ms")
    limit = Config().max_concurrency
    for n in sizes.tasks:
        case = Case(f"wide_{n}", "independent", n)
        folder = tmp / "flows" / case.key
        folder.mkdir(parents=True)
        (folder / f"{case.key}.py").write_text(flow_source(case))
        db = tmp / f"{case.key}.db"
        load.values.append(load_time(folder, sizes.repeats))
        joined = tmp / "flows" / f"join_{n}"
        joined.mkdir()
        (joined / f"join_{n}.py").write_text(join_source(n))
        load_join.values.append(load_time(joined, sizes.repeats))
        if n == sizes.tasks[0]:  # untimed: fills the bytecode cache of runtime/ and its deps
            procs.run("run", case.key, "--flows", str(folder), "--db", str(tmp / "warm.db"))
        took, peak = procs.run("run", case.key, "--flows", str(folder), "--db", str(db))
        run.values.append(took)
        rss.values.append(peak)
        run_id = str(_newest_run(db))
        show.values.append(procs.time("show", run_id, "--json", "--db", str(db)))

        def show_once(db: Path = db, run_id: int = int(run_id)) -> float:
            conn = connect_reader(db)
            try:
                start = perf_counter()
                codec.pretty(queries.get_run(conn, run_id))
                return perf_counter() - start
            finally:
                conn.close()

        show_in.values.append(median_of(show_once, sizes.repeats))
        print(f"  flow file of {n:,} tasks done", file=sys.stderr)
    title = f"flow file of N independent async tasks (limit {limit})"
    return print_series(title, sizes.tasks, [load, load_join, run, rss, show, show_in])


def _newest_run(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT MAX(id) FROM runs").fetchone()
    finally:
        conn.close()
    return int(row[0])


# --- history ---

_INSERT_RUN = (
    "INSERT INTO runs (id, flow, state, params, trigger, logical_date, idempotency_key, "
    "created_at, started_at, ended_at) VALUES (?, ?, ?, '{}', ?, ?, ?, ?, ?, ?)"
)
CHUNK = 250_000  # runs per transaction


def _run_rows(first: int, last: int) -> Iterator[tuple[Any, ...]]:
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(first, last):
        at = codec.iso(base + timedelta(minutes=i))
        end = codec.iso(base + timedelta(minutes=i, seconds=2))
        state = "failed" if i % 100 == 7 else "succeeded"
        trigger = f'{{"kind":"schedule","spec":"every(\'1m\')","scheduled":"{at}"}}'
        yield (i + 1, f"flow{i % 10}", state, trigger, at, f"schedule:{at}", at, at, end)


def fill_history(db: Path, runs: int) -> float:
    """A database made by the store's migrations, then *runs* ended runs with one task and
    one attempt each, written with executemany in transactions of CHUNK runs; seconds taken."""

    async def create() -> None:
        async with open_store(db):
            pass

    anyio.run(create)
    start = perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # generated data: no need to survive a crash
        for first in range(0, runs, CHUNK):
            last = min(runs, first + CHUNK)
            conn.execute("BEGIN")
            conn.executemany(_INSERT_RUN, _run_rows(first, last))
            conn.execute(
                "INSERT INTO tasks (run_id, name, idx, state, attempts, started_at, ended_at, "
                "has_result, result) SELECT id, 'work', -1, state, 1, started_at, ended_at, 1, "
                "'null' FROM runs WHERE id > ? ORDER BY id",
                (first,),
            )
            conn.execute(
                "INSERT INTO attempts (run_id, name, idx, attempt, state, started_at, ended_at) "
                "SELECT id, 'work', -1, 1, state, started_at, ended_at FROM runs WHERE id > ? "
                "ORDER BY id",
                (first,),
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return perf_counter() - start


def history(tmp: Path, procs: Procs, sizes: Sizes) -> list[str]:
    fill = Row("(fill: executemany, not Sluiceway)", "s")
    runs = Row("`sluiceway runs --limit 50` (fresh process)", "ms")
    show = Row("`sluiceway show ID`, one run (fresh process)", "ms")
    flows_cmd = Row("`sluiceway flows` (fresh process)", "ms")
    first = Row("`sluiceway serve` first start to READY=1", "s")
    ready = Row("`sluiceway serve` restart to READY=1", "s")
    serve_flows = tmp / "serve_flows"
    serve_flows.mkdir()
    (serve_flows / "ticking.py").write_text(SERVE_FLOW)
    measured: list[int] = []
    for n in sizes.history:
        if fill.values and fill.values[-1] is not None:
            guess = fill.values[-1] * n / measured[-1]
            if guess > FILL_CAP:
                print(
                    f"  history of {n:,} runs not made: the fill would take about {guess:.0f} s"
                    f" (over {FILL_CAP:.0f} s); the series stops at {measured[-1]:,}",
                    file=sys.stderr,
                )
                break
        db = tmp / f"history-{n}.db"
        fill.values.append(fill_history(db, n))
        measured.append(n)
        common = ("--db", str(db))
        runs.values.append(procs.time("runs", "--limit", "50", *common))
        show.values.append(procs.time("show", str(n // 2), *common))
        flows_cmd.values.append(procs.time("flows", "--flows", str(serve_flows), *common))
        first.values.append(time_to_ready(tmp, serve_flows, db))
        again = [time_to_ready(tmp, serve_flows, db) for _ in range(2)]
        ready.values.append(
            statistics.median(t for t in again if t is not None) if all(again) else None
        )
        print(f"  history of {n:,} runs done", file=sys.stderr)
    rows = [fill, runs, show, flows_cmd, first, ready]
    for row in rows:
        row.values += [None] * (len(sizes.history) - len(row.values))
    return print_series("history of N ended runs", sizes.history, rows)


# --- schedules ---


async def _noop() -> None:
    return None


def spread_flows(n: int) -> dict[str, Flow]:
    """*n* flows, each ``every("1h")`` anchored 3600/n s after the one before."""
    flows = {}
    step = 3600 / n
    for i in range(n):
        start = EPOCH + timedelta(seconds=round(i * step, 6))
        flow = Flow(f"s{i}", triggers=[every("1h", start=start)])
        flow.task(name="work")(_noop)
        flows[flow.name] = flow
    return flows


def _no_queue() -> None:
    """No run queue to wake: the passes alone are measured."""


async def planner_passes(db: Path, n: int, passes: int) -> tuple[float, float, float]:
    """The start-up pass, then *passes* passes each made at the instant the next trigger is
    due (as run_scheduler does), on a fake clock. Returns seconds: the start-up pass, and the
    median wall time and median CPU time (of this process: the loop, the store's reader and
    writer threads) of a later pass. CPU time leaves out the commit's fsync and the time other
    processes on this shared machine take, so it shows the work."""
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=UTC))
    flows = spread_flows(n)
    async with open_test_runner(db, clock=clock) as runner:
        memory = Agenda()  # what run_scheduler keeps between passes
        start = perf_counter()
        upcoming = await tick(runner.store, clock, flows, _no_queue, memory)
        startup = perf_counter() - start
        times, cpu = [], []
        for _ in range(passes):
            assert upcoming is not None
            clock.advance((upcoming - clock.now()).total_seconds())
            start, used = perf_counter(), process_time()
            upcoming = await tick(runner.store, clock, flows, _no_queue, memory)
            times.append(perf_counter() - start)
            cpu.append(process_time() - used)
    return startup, statistics.median(times), statistics.median(cpu)


def schedules(tmp: Path, sizes: Sizes) -> list[str]:
    startup = Row("start-up pass (plans every trigger)", "ms")
    steady = Row("a pass with one trigger due", "ms")
    steady_cpu = Row("  its CPU time", "ms")
    hourly = Row("scheduler CPU time per hour (N passes)", "s")
    for n in sizes.schedules:
        first, each, cpu = anyio.run(planner_passes, tmp / f"sched-{n}.db", n, sizes.passes)
        startup.values.append(first)
        steady.values.append(each)
        steady_cpu.values.append(cpu)
        hourly.values.append(cpu * n)
        print(f"  {n:,} schedules done", file=sys.stderr)
    title = 'N schedules, every("1h") spread over the hour'
    return print_series(title, sizes.schedules, [startup, steady, steady_cpu, hourly])


SERIES = ("flows", "history", "schedules")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="sizes /10")
    parser.add_argument("--only", choices=SERIES, action="append", help="run only this series")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    only = args.only or SERIES
    print(
        f"sluiceway growth bench ({'quick' if args.quick else 'full'}): "
        f"nproc {len(os.sched_getaffinity(0))}, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}; ratios are of successive sizes, "
        f"x{SUPER:.0f} or more per x10 is flagged SUPER-LINEAR"
    )
    start = perf_counter()
    flagged: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-scale-") as name:
        tmp = Path(name)
        procs = Procs(tmp)
        if "flows" in only:
            flagged += flow_files(tmp, procs, sizes)
        if "history" in only:
            flagged += history(tmp, procs, sizes)
        if "schedules" in only:
            flagged += schedules(tmp, sizes)
    print()
    if flagged:
        print("SUPER-LINEAR: " + "; ".join(flagged))
    else:
        print("nothing grew faster than x30 per x10")
    print(f"bench took {perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
