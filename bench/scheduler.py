"""Scheduler and service bench: fire latency, event-loop lag, memory, restart-to-READY.

Run from the repository root (prints figures, never asserts):

    .venv/bin/python bench/scheduler.py           # full pass, about a minute on 2 cores
    .venv/bin/python bench/scheduler.py --quick   # smaller, faster pass

Targets from the service issue (section 10): fire latency p50 <= 20 ms and p99 <= 100 ms with
1,000 schedules; event-loop lag p99 < 50 ms while 200 tasks run; restart-to-READY <= 2 s with
100,000 runs in history; RSS after 10,000 runs no more than 100 MB above RSS after 1,000. From
the faults issue (item 3): a queued run that can start is picked up within 0.25 s beside
100,000 queued runs of flows that cannot.

Fire latency is measured two ways: "committed" is the wall time at which the scheduler woke the
run queue (just after the runs' transaction committed) minus the scheduled instant; "created"
is the runs' created_at column (the pass's clock reading) minus logical_date.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from time import perf_counter

import anyio

from runtime import codec
from runtime.clock import SystemClock
from runtime.define.flow import Flow
from runtime.define.triggers import every
from runtime.scheduling.ticker import run_scheduler
from runtime.service.context import ServiceContext
from runtime.store import cursors, open_store
from runtime.testing import open_test_runner

REPO = Path(__file__).resolve().parents[1]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    schedules: int = 1000
    fire_seconds: float = 6.0
    lag_tasks: int = 200
    lag_repeats: int = 10
    rss_first: int = 1000
    rss_total: int = 10000
    history: int = 100_000
    drain: int = 5_000
    blocked: int = 100_000
    pickups: int = 40


FULL = Sizes()
QUICK = Sizes(
    fire_seconds=3.0,
    lag_repeats=3,
    rss_first=200,
    rss_total=2000,
    history=20_000,
    drain=1000,
    pickups=12,
)


def pct(values: Sequence[float], p: float) -> float:
    """The *p*-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def scheduled_flow(name: str, trigger: object) -> Flow:
    flow = Flow(name, triggers=[trigger])
    flow.task(name="work")(_noop)
    return flow


async def _noop() -> None:
    return None


# --- fire latency ---


async def fire_latency(tmp: Path, n: int, seconds: float, *, spread: bool) -> dict[str, float]:
    """Drive run_scheduler with the system clock and *n* schedules for *seconds*.

    Burst: every flow ``every("1s")``, so *n* runs share each instant. Spread: ``every("5s")``
    anchored 5 ms apart, so the loop wakes for a different instant every 5 ms.
    """
    db = tmp / f"fire-{'spread' if spread else 'burst'}.db"
    if spread:
        step = 5.0 / n
        flows = {
            f"s{i}": scheduled_flow(
                f"s{i}", every("5s", start=EPOCH + timedelta(seconds=round(i * step, 6)))
            )
            for i in range(n)
        }
    else:
        flows = {f"s{i}": scheduled_flow(f"s{i}", every("1s")) for i in range(n)}
    clock = SystemClock()
    committed: list[float] = []
    async with open_test_runner(db, clock=clock, flush_interval=0.05) as runner:
        ctx = ServiceContext(config=runner.config, runner=runner, flows=flows, epoch=0)
        begin = clock.now()
        seen = sqlite3.connect(db)

        async def watch() -> None:
            # The scheduler wakes the queue right after each commit: the runs first visible at
            # a wake were committed just before it. A sync read: a thread hop could miss a wake.
            last = 0
            while True:
                await ctx.queue_changed.wait()
                now = clock.now()
                for run_id, logical in seen.execute(
                    "SELECT id, logical_date FROM runs WHERE id > ?", (last,)
                ):
                    last = max(last, run_id)
                    instant = datetime.fromisoformat(logical)
                    if instant > begin:
                        committed.append((now - instant).total_seconds())

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await tg.start(
                run_scheduler,
                ctx.store,
                ctx.clock,
                lambda: ctx.flows,
                lambda: ctx.flows_changed,
                ctx.wake_queue,
            )
            begin = clock.now()  # after the start-up pass: only instants that come on time
            await anyio.sleep(seconds)
            tg.cancel_scope.cancel()
        seen.close()
    conn = sqlite3.connect(db)
    stamps = conn.execute("SELECT logical_date, created_at FROM runs").fetchall()
    conn.close()
    # compared as datetimes: as text, "…:43Z" sorts after "…:43.7Z"
    parsed = [(datetime.fromisoformat(lg), datetime.fromisoformat(c)) for lg, c in stamps]
    rows = [(lg, c) for lg, c in parsed if lg > begin]
    created = [(c - lg).total_seconds() for lg, c in rows]
    return {
        "runs": len(rows),
        "created_p50": pct(created, 50),
        "created_p99": pct(created, 99),
        "committed_p50": pct(committed, 50),
        "committed_p99": pct(committed, 99),
    }


# --- event-loop lag ---


def wide_flow(n: int) -> Flow:
    """*n* independent tasks of about 100 ms: half async (ten 10 ms sleeps), half ``def``
    (a 20 ms blocking wait, as for I/O, and a little CPU work) in worker threads."""
    flow = Flow(f"wide{n}")

    async def naps() -> None:
        for _ in range(10):
            await anyio.sleep(0.01)

    def blocking() -> int:
        time.sleep(0.02)
        return sum(range(20_000))

    for i in range(n):
        if i % 2:
            flow.task(name=f"a{i}")(naps)
        else:
            flow.task(name=f"d{i}")(blocking)
    return flow


async def loop_lag(tmp: Path, tasks: int, repeats: int) -> dict[str, float]:
    """How late a 10 ms sleep wakes while a flow of *tasks* tasks runs through runner.run."""
    flow = wide_flow(tasks)
    lags: list[float] = []
    async with open_test_runner(
        tmp / "lag.db", clock=SystemClock(), max_concurrency=tasks, flush_interval=0.05
    ) as runner:

        async def ticker() -> None:
            while True:
                start = perf_counter()
                await anyio.sleep(0.01)
                lags.append(perf_counter() - start - 0.01)

        took = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            for _ in range(repeats):
                start = perf_counter()
                result = await runner.run(flow)
                took.append(perf_counter() - start)
                if not result.ok:
                    raise RuntimeError(f"bench flow ended {result.state}")
            tg.cancel_scope.cancel()
    return {
        "samples": len(lags),
        "p50": pct(lags, 50),
        "p99": pct(lags, 99),
        "max": max(lags),
        "run": statistics.median(took),
    }


# --- memory ---


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        resident = int(fh.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20


async def memory(tmp: Path, first: int, total: int) -> dict[str, float]:
    """RSS after *first* and after *total* sequential runs of a small 3-task flow."""
    flow = Flow("small", params={"n": 3})

    @flow.task
    async def extract(n: int) -> list[int]:
        return list(range(n))

    @flow.task
    def transform(extract: list[int]) -> list[int]:
        return [x * 2 for x in extract]

    @flow.task
    async def load(transform: list[int]) -> int:
        return len(transform)

    out = {"start": rss_mb()}
    async with open_test_runner(tmp / "rss.db", clock=SystemClock(), flush_interval=0.05) as runner:
        start = perf_counter()
        for i in range(1, total + 1):
            result = await runner.run(flow)
            if not result.ok:
                raise RuntimeError(f"bench flow ended {result.state}")
            if i == first:
                out["first"] = rss_mb()
        out["rate"] = total / (perf_counter() - start)
        out["total"] = rss_mb()
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- restart to READY ---

SERVE_FLOW = """
from __future__ import annotations

from runtime import Flow, every

ticking = Flow("ticking", triggers=[every("1h")])


@ticking.task
def work() -> None:
    return None
"""


def fill_history(db: Path, runs: int) -> None:
    """A database with *runs* ended runs (one task row each), written with executemany."""

    async def create() -> None:
        async with open_store(db):
            pass

    anyio.run(create)
    conn = sqlite3.connect(db, isolation_level=None)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(runs):
        at = codec.iso(base + timedelta(minutes=i))
        rows.append(("ticking", "succeeded", "{}", '{"kind":"manual"}', at, at, at, at))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (flow, state, params, trigger, logical_date, created_at, started_at, "
        "ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "INSERT INTO tasks (run_id, name, idx, state, attempts, started_at, ended_at) "
        "SELECT id, 'work', -1, 'succeeded', 1, started_at, ended_at FROM runs"
    )
    conn.execute("COMMIT")
    conn.close()


def _spawn_serve(tmp: Path, flows: Path, db: Path, **env: str) -> subprocess.Popen[bytes]:
    """`sluiceway serve` as a fresh process, without SLUICEWAY_* or a systemd watchdog."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLUICEWAY_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    script = Path(sys.executable).parent / "sluiceway"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "runtime.cli.main"]
    return subprocess.Popen(
        [*cmd, "serve", "--flows", str(flows), "--db", str(db)],
        cwd=tmp,
        env={**clean, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def time_to_ready(tmp: Path, flows: Path, db: Path, timeout: float = 60.0) -> float | None:
    """Start ``sluiceway serve`` with NOTIFY_SOCKET on a datagram socket bound here; return
    the seconds from spawn to READY=1 (None if it never came), then SIGTERM it."""
    address = str(tmp / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if os.path.exists(address):
            os.unlink(address)
        sock.bind(address)
        sock.settimeout(0.2)
        start = perf_counter()
        proc = _spawn_serve(tmp, flows, db, NOTIFY_SOCKET=address)
        ready = None
        try:
            while ready is None and perf_counter() - start < timeout:
                try:
                    message = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    if proc.poll() is not None:
                        break
                    continue
                if "READY=1" in message.splitlines():
                    ready = perf_counter() - start
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return ready


DRAIN_FLOW = """
from runtime import Flow

pair = Flow("pair")


@pair.task
async def a() -> int:
    return 1


@pair.task
async def b(a: int) -> int:
    return a + 1
"""


def queue_drain(tmp: Path, runs: int) -> str:
    """Queue *runs* two-task runs (as `sluiceway trigger` would), start `sluiceway serve`,
    and time spawn -> every run succeeded."""
    flows = tmp / "drain_flows"
    flows.mkdir(exist_ok=True)
    (flows / "pair.py").write_text(DRAIN_FLOW)
    db = tmp / "drain.db"

    async def queue() -> None:
        async with open_store(db) as store:
            now = SystemClock().now()
            for _ in range(runs):
                store.writer.put_op(partial(_queue_one, now=codec.iso(now)))

    anyio.run(queue)
    start = perf_counter()
    proc = _spawn_serve(tmp, flows, db)
    took = None
    try:
        with sqlite3.connect(db) as conn:
            while perf_counter() - start < 60 and proc.poll() is None:
                done = conn.execute("SELECT COUNT(*) FROM runs WHERE state = 'succeeded'")
                if done.fetchone()[0] >= runs:
                    took = perf_counter() - start
                    break
                time.sleep(0.02)  # polling another process's progress
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if took is None:
        return "did not finish"
    return f"{took:.2f} s from spawn ({runs / took:,.0f} runs/s, start-up included)"


def _queue_one(db: sqlite3.Connection, *, now: str | None) -> None:
    db.execute(
        "INSERT INTO runs (flow, state, params, trigger, logical_date, created_at) "
        "VALUES ('pair', 'queued', '{}', '{\"kind\": \"manual\"}', ?, ?)",
        (now, now),
    )


BLOCKED_FLOWS = """
import anyio

from runtime import Flow

held = Flow("held")  # paused by the bench


@held.task
async def hold() -> None:
    return None


capped = Flow("capped", max_active_runs=1)  # its first run never ends


@capped.task
async def cap() -> None:
    await anyio.sleep(3600)


other = Flow("other")


@other.task
async def go() -> None:
    return None
"""


def blocked_pickup(tmp: Path, blocked: int, samples: int) -> str:
    """Pickup latency (the run's started_at minus its created_at, both stamped on this box's
    wall clock) of runs queued one at a time for `sluiceway serve`, first with an empty
    queue, then beside *blocked* queued runs of flows that cannot start: a paused flow, a flow
    at max_active_runs=1, a flow that is not loaded (a third each). Each run is queued at a
    random moment of the service's 0.25 s poll."""
    flows = tmp / "blocked_flows"
    flows.mkdir(exist_ok=True)
    (flows / "blocked.py").write_text(BLOCKED_FLOWS)
    db = tmp / "blocked.db"

    async def prepare() -> None:
        async with open_store(db) as store:
            await cursors.set_paused(store, "held", True, SystemClock().now())
            store.writer.put_op(partial(_queue_flow, flow="capped", count=1))

    anyio.run(prepare)
    proc = _spawn_serve(tmp, flows, db, SLUICEWAY_SHUTDOWN_GRACE="0.1s")
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)

    def wait_state(run_id: int, states: tuple[str, ...], timeout: float = 30.0) -> bool:
        deadline = perf_counter() + timeout
        while perf_counter() < deadline and proc.poll() is None:
            row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row and row[0] in states:
                return True
            time.sleep(0.005)  # polling another process's progress
        return False

    def measure() -> list[float] | None:
        took = []
        for _ in range(samples):
            time.sleep(random.uniform(0, 0.25))
            conn.execute("BEGIN IMMEDIATE")
            run_id = _queue_flow(conn, flow="other", count=1)
            conn.execute("COMMIT")
            if not wait_state(run_id, ("succeeded", "failed")):
                return None
            created, started = conn.execute(
                "SELECT created_at, started_at FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            took.append(
                (datetime.fromisoformat(started) - datetime.fromisoformat(created)).total_seconds()
            )
        return took

    try:
        if not wait_state(1, ("running",)):
            return "the service did not start the first capped run"
        empty = measure()
        conn.execute("BEGIN IMMEDIATE")
        third = blocked // 3
        for flow, count in (("held", third), ("capped", third), ("ghost", blocked - 2 * third)):
            _queue_flow(conn, flow=flow, count=count)
        conn.execute("COMMIT")
        full = measure()
    finally:
        conn.close()
        proc.terminate()
        proc.wait(timeout=30)
    if empty is None or full is None:
        return "a run of other was not picked up within 30 s"

    def figures(took: list[float]) -> str:
        return f"p50 {ms(pct(took, 50))}, p95 {ms(pct(took, 95))}, max {ms(max(took))}"

    return f"empty queue {figures(empty)}; beside {blocked:,} blocked runs {figures(full)}"


def _queue_flow(db: sqlite3.Connection, *, flow: str, count: int) -> int:
    """Queue *count* runs of *flow* as `sluiceway trigger` would; the last run's id."""
    now = codec.iso(SystemClock().now())
    db.executemany(
        "INSERT INTO runs (flow, state, params, trigger, logical_date, created_at) "
        "VALUES (?, 'queued', '{}', '{\"kind\": \"manual\"}', ?, ?)",
        [(flow, now, now)] * count,
    )
    (last,) = db.execute("SELECT MAX(id) FROM runs").fetchone()
    return int(last)


def restart_to_ready(tmp: Path, runs: int) -> str:
    service = importlib.import_module("runtime.service.serve")
    if not hasattr(service, "serve"):
        return "n/a (service not available)"
    flows = tmp / "serve_flows"
    flows.mkdir(exist_ok=True)
    (flows / "ticking.py").write_text(SERVE_FLOW)
    db = tmp / "history.db"
    start = perf_counter()
    fill_history(db, runs)
    filled = perf_counter() - start
    first = time_to_ready(tmp, flows, db)
    again = time_to_ready(tmp, flows, db)  # the restart: epochs and recovery already ran once
    if first is None or again is None:
        return f"no READY=1 (first start {first}, restart {again}) with {runs:,} runs"
    return (
        f"{again:.2f} s (first start {first:.2f} s) with {runs:,} runs in history "
        f"(filled in {filled:.1f} s)"
    )


# --- main ---


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster pass")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    print(f"sluiceway scheduler bench ({mode}): nproc {len(os.sched_getaffinity(0))}, "
          f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-") as name:
        tmp = Path(name)
        for spread in (False, True):
            kind = "spread, 1 instant per 5 ms" if spread else "burst, all at each second"
            fire = anyio.run(
                partial(fire_latency, tmp, sizes.schedules, sizes.fire_seconds, spread=spread)
            )
            print(
                f"fire latency, {sizes.schedules:,} schedules ({kind}), {fire['runs']:,} runs: "
                f"committed p50 {ms(fire['committed_p50'])} p99 {ms(fire['committed_p99'])}; "
                f"created p50 {ms(fire['created_p50'])} p99 {ms(fire['created_p99'])} "
                "(target p50 <= 20 ms, p99 <= 100 ms)"
            )
        lag = anyio.run(loop_lag, tmp, sizes.lag_tasks, sizes.lag_repeats)
        print(
            f"event-loop lag, {sizes.lag_tasks} tasks x {sizes.lag_repeats} runs "
            f"(limit {sizes.lag_tasks}, not the default: all of them run at once) "
            f"({lag['samples']} samples, run {ms(lag['run'])}): p50 {ms(lag['p50'])} "
            f"p99 {ms(lag['p99'])} max {ms(lag['max'])} (target p99 < 50 ms)"
        )
        mem = anyio.run(memory, tmp, sizes.rss_first, sizes.rss_total)
        print(
            f"RSS: start {mem['start']:.0f} MB, after {sizes.rss_first:,} runs "
            f"{mem['first']:.0f} MB, after {sizes.rss_total:,} runs {mem['total']:.0f} MB "
            f"(growth {mem['total'] - mem['first']:+.1f} MB, target <= +100 MB; "
            f"{mem['rate']:.0f} runs/s, max RSS {mem['maxrss']:.0f} MB)"
        )
        print(f"restart-to-READY: {restart_to_ready(tmp, sizes.history)} (target <= 2 s)")
        picked = blocked_pickup(tmp, sizes.blocked, sizes.pickups)
        print(
            f"queue pickup of a run queued by another process, {sizes.pickups} samples: "
            f"{picked} (target <= 250 ms)"
        )
        drained = queue_drain(tmp, sizes.drain)
        print(
            f"queue drain: {sizes.drain:,} queued 2-task runs through `sluiceway serve`: {drained}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
