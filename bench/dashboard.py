"""Dashboard and read-API bench over a long history: 100,000 runs and about 1,000,000 task
attempts (bench/history.py), served by a real ``sluiceway serve``; prints p50/p99 of each
read, never asserts.

    .venv/bin/python bench/dashboard.py                     # generates the history (~1-2 min)
    .venv/bin/python bench/dashboard.py --cache /var/tmp/sw # keeps it for the next time
    .venv/bin/python bench/dashboard.py --log-lines 10000000  # log search over 10M lines
    .venv/bin/python bench/dashboard.py --quick             # 20,000 runs, fewer requests

Targets (issue 13): run-list API p99 <= 50 ms, home page <= 100 ms, a flow's grid <= 300 ms,
log search over 10,000,000 lines <= 200 ms. Requests are sent one at a time (latency), then 20
clients poll pages and the API while a probe measures ``/healthz`` (the event loop's lag as a
client sees it) and ``/metrics`` is read for ``sluiceway_event_loop_lag_seconds`` when served.
A route the service does not have (404) prints "not available". The log lines generated
with the history are one per attempt; 10,000,000 (about 3 minutes more, 1.5 GB) only when
``--log-lines`` asks for them.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from time import perf_counter

import aiohttp
import anyio
from history import VERSION, generate
from history_rows import FLOW_NAMES

from runtime.cli.output import SLUICEWAY
from runtime.store.schema import SCHEMA_VERSION

TOKEN = "bench-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
FLOW_FILE = """
from runtime import Flow, cron

def make(name: str) -> Flow:
    flow = Flow(name, triggers=[cron("0 3 * * *")], params={"day": "today", "full": False})

    @flow.task
    def extract() -> list[int]:
        return [0, 1, 2, 3, 4]

    @flow.task
    def validate(extract: list[int]) -> int:
        return len(extract)

    @flow.task
    def transform(validate: int, extract: list[int]) -> list[int]:
        return extract

    @flow.task(map="transform")
    def load(transform: int) -> int:
        return transform

    @flow.task
    def publish(load: list[int]) -> None:
        return None

    return flow

for _name in NAMES:
    make(_name)
"""


def history_file(args: argparse.Namespace, work: Path) -> Path:
    """The generated history for these sizes: from the cache folder when it has it."""
    lines = args.log_lines or 0
    name = f"history-s{SCHEMA_VERSION}-g{VERSION}-{args.runs}-{args.flows}-{lines}.db"
    cached = args.cache / name if args.cache else None
    target = work / "sluiceway.db"
    if cached is not None and cached.exists():
        print(f"history: {cached} (cached)")
        shutil.copyfile(cached, target)
        return target
    made = generate(
        target,
        runs=args.runs,
        flows=args.flows,
        log_lines_per_task=1,
        log_lines=args.log_lines,
    )
    counts = ", ".join(f"{n:,} {table}" for table, n in made.counts.items())
    print(f"history: {counts} generated in {made.seconds:.1f}s")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, cached)
    return target


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def start_service(work: Path, db: Path, port: int, flows: int) -> subprocess.Popen[bytes]:
    """``sluiceway serve`` over *db* with the history's flows, the API on *port*."""
    (work / "flows").mkdir()
    names = [FLOW_NAMES[i] if i < len(FLOW_NAMES) else f"flow_{i}" for i in range(flows)]
    (work / "flows" / "bench_flows.py").write_text(f"NAMES = {names!r}\n" + FLOW_FILE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")},
        "SLUICEWAY_API_BIND": f"127.0.0.1:{port}",
        "SLUICEWAY_API_TOKEN": TOKEN,
        "SLUICEWAY_LOG_LEVEL": "WARNING",
    }
    args = [*SLUICEWAY, "serve", "--flows", str(work / "flows"), "--db", str(db)]
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(args, cwd=work, env=env, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"service did not listen on {port}:\n{(work / 'serve.log').read_text()}")


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(x * 1000 for x in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


async def timed(session: aiohttp.ClientSession, url: str) -> tuple[int, float, bytes]:
    began = perf_counter()
    async with session.get(url, headers=HEADERS) as resp:
        body = await resp.read()
        return resp.status, perf_counter() - began, body


async def latency(session: aiohttp.ClientSession, base: str, what: str, path: str, n: int) -> None:
    """*n* GETs of *path* one after another: p50/p99, or "not available" for a 404."""
    status, _, body = await timed(session, base + path)  # warm-up, and is it there at all
    if status == 404:
        print(f"{what:<44} not available (404)")
        return
    if status != 200:
        print(f"{what:<44} HTTP {status}: {body[:200]!r}")
        return
    took = [(await timed(session, base + path))[1] for _ in range(n)]
    p50, p99 = percentiles(took)
    print(f"{what:<44} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({n} requests, {len(body):,} B)")


def cursor_below(run_id: int) -> str:
    """The cursor of the page below *run_id* (as the API encodes next_cursor)."""
    return base64.urlsafe_b64encode(str(run_id).encode()).decode().rstrip("=")


async def first_id(session: aiohttp.ClientSession, base: str, query: str) -> int | None:
    async with session.get(f"{base}/api/runs?limit=1&{query}", headers=HEADERS) as resp:
        if resp.status != 200:
            return None
        runs = (await resp.json())["runs"]
        return int(runs[0]["id"]) if runs else None


async def sequential(base: str, n: int, runs: int) -> None:
    async with aiohttp.ClientSession() as session:
        deep = cursor_below(max(2, runs // 100))
        failed = await first_id(session, base, "state=failed")
        checks = [
            ("GET /api/runs (first page of 50)", "/api/runs"),
            ("GET /api/runs?flow=audit_trail&state=failed", "/api/runs?flow=audit_trail&state=failed"),
            ("GET /api/runs?state=succeeded&trigger=cron", "/api/runs?state=succeeded&trigger=cron"),
            ("GET /api/runs?trigger=retry,backfill", "/api/runs?trigger=retry,backfill"),
            ("GET /api/runs, one day a month ago", "/api/runs?since=-31&until=-30"),
            ("GET /api/runs, deep cursor (1% of history)", f"/api/runs?cursor={deep}"),
            ("GET /api/runs?limit=500", "/api/runs?limit=500"),
            ("GET /api/flows", "/api/flows"),
            ("GET /api/runs/{failed run}", f"/api/runs/{failed}"),
            ("GET /api/runs/{failed run}/logs", f"/api/runs/{failed}/logs"),
            ("GET / (home page)", "/"),
            ("GET /flows/orders (grid)", "/flows/orders"),
            ("GET /runs/{failed run} (run page)", f"/runs/{failed}"),
            ("GET /api/logs/search?q=warehouse", "/api/logs/search?q=warehouse"),
            ("GET /api/logs/search?q=ConnectionResetError", "/api/logs/search?q=ConnectionResetError"),
        ]  # fmt: skip
        for what, path in checks:
            await latency(session, base, what, _days(path), n)


def _days(path: str) -> str:
    """since=-31&until=-30 as dates that many days before today (UTC)."""
    if "since=-" not in path:
        return path
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=31), today - timedelta(days=30)
    return path.replace("since=-31", f"since={since}").replace("until=-30", f"until={until}")


async def polling(base: str, clients: int, seconds: float) -> None:
    """*clients* poll the pages and the API as fast as answered; a probe measures /healthz
    every 50 ms meanwhile; then /metrics' loop lag, when the service has it."""
    paths = ["/", "/flows/orders", "/api/runs", "/api/flows", "/api/runs?state=failed"]
    served: list[float] = []
    probes: list[float] = []
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients + 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(k: int) -> None:
            while time.monotonic() < stop:
                _, took, _ = await timed(session, base + paths[(k + len(served)) % len(paths)])
                served.append(took)

        async def probe() -> None:
            while time.monotonic() < stop:
                probes.append((await timed(session, base + "/healthz"))[1])
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            for k in range(clients):
                group.start_soon(client, k)
            group.start_soon(probe)
        p50, p99 = percentiles(served)
        print(f"{clients} clients polling for {seconds:.0f}s: {len(served) / seconds:6.0f} req/s, "
              f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
        p50, p99 = percentiles(probes)
        print(
            f"  /healthz meanwhile (loop lag as a client sees it): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        await _metrics_lag(session, base)


async def _metrics_lag(session: aiohttp.ClientSession, base: str) -> None:
    status, _, body = await timed(session, base + "/metrics")
    if status != 200:
        print("  /metrics: not available")
        return
    lines = [x for x in body.decode().splitlines() if x.startswith("sluiceway_event_loop_lag")]
    print("  /metrics: " + ("; ".join(lines) if lines else "no sluiceway_event_loop_lag series"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--log-lines", type=int, default=None, help="e.g. 10000000")
    parser.add_argument("--cache", type=Path, default=None, help="keep histories here")
    parser.add_argument("--requests", type=int, default=200, help="per measured route")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--poll-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="20,000 runs, 50 requests each")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.requests, args.poll_seconds = 20_000, 50, 5.0
    with tempfile.TemporaryDirectory(prefix="sluiceway-dashboard-") as tmp:
        work = Path(tmp)
        db = history_file(args, work)
        port = free_port()
        proc = start_service(work, db, port, args.flows)
        try:
            base = f"http://127.0.0.1:{port}"
            anyio.run(sequential, base, args.requests, args.runs)
            anyio.run(polling, base, args.clients, args.poll_seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)


if __name__ == "__main__":
    main()
