"""API bench: runs queued per second through ``POST /api/flows/{flow}/runs`` and
``POST /api/events/{name}`` with 50 concurrent clients against a real ``sluiceway serve``,
and the latency of each request, p50/p99 (prints figures, never asserts).

    .venv/bin/python bench/api.py              # about 20 s on 2 cores
    .venv/bin/python bench/api.py --quick

The service runs in its own process on 127.0.0.1 (token auth on, the default flush interval)
and executes the runs it is given as well (one trivial task each), as it would in production;
the clients share this process's event loop, on the same machine: the figures are a floor.
Each answer arrives only after its run row is committed (one fsync per writer batch).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from time import perf_counter

import aiohttp
import anyio
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.cli.output import SLUICEWAY

TOKEN = "bench-token-0123456789abcdef"
FLOWS = """
from runtime import Flow, on_event

one = Flow("one")
first = Flow("first", triggers=[on_event("landed")])
second = Flow("second", triggers=[on_event("landed")])


def noop() -> None:
    pass


for flow in (one, first, second):
    flow.task()(noop)
"""


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def start_service(home: Path, port: int, *, paused: bool) -> subprocess.Popen[bytes]:
    (home / "flows").mkdir()
    (home / "flows" / "flows.py").write_text(FLOWS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")},
        "SLUICEWAY_API_BIND": f"127.0.0.1:{port}",
        "SLUICEWAY_API_TOKEN": TOKEN,
        "SLUICEWAY_LOG_LEVEL": "WARNING",
    }
    where = ["--flows", str(home / "flows"), "--db", str(home / "h.db")]
    if paused:  # the runs stay queued: the service only answers the API
        for flow in ("one", "first", "second"):
            subprocess.run([*SLUICEWAY, "pause", flow, *where], env=env, check=True)
    args = [*SLUICEWAY, "serve", *where]
    proc = subprocess.Popen(args, cwd=home, env=env, stderr=(home / "serve.log").open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"service did not listen on {port}:\n{(home / 'serve.log').read_text()}")


async def load(url: str, total: int, clients: int, body: bytes) -> tuple[float, list[float]]:
    """*total* POSTs to *url* from *clients* concurrent clients: (seconds, latencies)."""
    latencies: list[float] = []
    todo = iter(range(total))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in todo:
            began = perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 201:
                    raise SystemExit(f"{url}: HTTP {resp.status}")
            latencies.append(perf_counter() - began)

    async with aiohttp.ClientSession(connector=connector) as session:
        began = perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(clients):
                group.start_soon(client, session)
        return perf_counter() - began, latencies


def report(what: str, seconds: float, latencies: list[float], runs_each: int) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{what:<34} {len(ms):>6} requests in {seconds:5.2f}s: "
        f"{len(ms) / seconds:7.0f} req/s, {len(ms) * runs_each / seconds:7.0f} runs/s; "
        f"latency p50 {statistics.median(ms):6.1f} ms, p99 {p99:6.1f} ms"
    )


async def bench(port: int, total: int, clients: int) -> None:
    base = f"http://127.0.0.1:{port}"
    await load(f"{base}/api/flows/one/runs", 100, clients, b"{}")  # warm-up
    body = orjson.dumps({"params": {}})
    seconds, latencies = await load(f"{base}/api/flows/one/runs", total, clients, body)
    report(f"POST /api/flows/one/runs, {clients} clients", seconds, latencies, 1)
    payload = orjson.dumps({"file": "orders.csv", "rows": 1200})
    seconds, latencies = await load(f"{base}/api/events/landed", total // 2, clients, payload)
    report(f"POST /api/events/landed ({clients} cl.)", seconds, latencies, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--paused", action="store_true", help="flows paused: the service only queues the runs"
    )
    args = parser.parse_args()
    total = 1000 if args.quick else 4000
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_service(Path(tmp), port, paused=args.paused)
        try:
            anyio.run(bench, port, total, args.clients)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)


if __name__ == "__main__":
    main()
