"""Live-stream bench: what ``GET /api/stream`` costs a real ``sluiceway serve`` with many
dashboard clients (prints figures, never asserts).

    .venv/bin/python bench/stream.py              # about 30 s on 2 cores
    .venv/bin/python bench/stream.py --quick

Measured, each against the same service (its own process; the clients read raw bytes in this
process):
- fan-out: a run of a mapped task with N instances (about 2N+4 run and task events), with
  0 and then 50 clients following everything: the run's own duration (started -> ended, as
  stored; the engine must not slow down), and the time until the last client got its end;
- idle: the service's CPU time over a few seconds with 50 connected clients and nothing
  happening, against the same with none;
- log tail: 50 clients on ``?run=`` of a run that logs L lines: until each has them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.cli.output import SLUICEWAY

TOKEN = "bench-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
FLOWS = """
import time

from runtime import Flow, Run

wide = Flow("wide", params={"n": 500}, max_concurrency=64)


@wide.task
def items(run: Run) -> list[int]:
    return list(range(int(run.params["n"])))


@wide.task(map="items")
def each(items: int) -> int:
    return items * 2


@wide.task
def total(each: list[int]) -> int:
    return sum(each)


chatty = Flow("chatty", params={"lines": 2000})


@chatty.task
def talk(run: Run) -> None:
    time.sleep(1.0)  # the clients connect meanwhile
    for i in range(int(run.params["lines"])):
        run.log.info("line %d of the bench's chatty task", i)
"""


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Finish:
    """When each follower saw its marker; an event once all of them did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: list[float] = []
        self.all = anyio.Event()
        if expected == 0:
            self.all.set()

    def saw(self) -> None:
        self.times.append(time.perf_counter())
        if len(self.times) == self.expected:
            self.all.set()


class Follower:
    """One client: reads the stream as bytes, counts frames, notes when a marker arrives."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.frames = 0
        self.tail = b""
        self.connected = anyio.Event()

    async def follow(self, marker: bytes, done: Finish) -> None:
        async with self.http.get(self.url, headers=HEADERS) as resp:
            assert resp.status == 200, resp.status
            self.connected.set()
            async for chunk in resp.content.iter_any():
                self.frames += chunk.count(b"\n\n")
                self.tail = (self.tail + chunk)[-4096:]
                if marker in self.tail:
                    done.saw()
                    return


async def trigger(http: aiohttp.ClientSession, base: str, flow: str, **params: int) -> int:
    async with http.post(
        f"{base}/api/flows/{flow}/runs", json={"params": params}, headers=HEADERS
    ) as resp:
        run_id: int = (await resp.json())["id"]
    return run_id


def stored_duration(db: Path, run_id: int) -> float | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT (julianday(ended_at) - julianday(started_at)) * 86400 FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


async def ended_after(db: Path, run_id: int) -> float:
    """The run's duration as stored, once its end is committed (a moment after the bus said
    so)."""
    for _ in range(2400):
        duration = stored_duration(db, run_id)
        if duration is not None:
            return float(duration)
        await anyio.sleep(0.05)
    raise SystemExit(f"run {run_id} did not end within 2 minutes")


async def fan_out(base: str, db: Path, clients: int, n: int) -> tuple[float, float, int]:
    """(run duration as stored, seconds until the last client had the end, frames/client)."""
    done = Finish(clients)
    async with aiohttp.ClientSession() as http, anyio.create_task_group() as group:
        followers = [Follower(http, f"{base}/api/stream?flow=wide") for _ in range(clients)]
        marker = b'"flow":"wide","state":"succeeded"'
        for follower in followers:
            group.start_soon(follower.follow, marker, done)
        for follower in followers:
            await follower.connected.wait()
        began = time.perf_counter()
        run_id = await trigger(http, base, "wide", n=n)
        with anyio.fail_after(120):
            await done.all.wait()
        duration = await ended_after(db, run_id)
        frames = followers[0].frames if followers else 0
    last = max(done.times) - began if done.times else 0.0
    return duration, last, frames


async def idle_cpu(base: str, pid: int, clients: int, seconds: float) -> float:
    async with aiohttp.ClientSession() as http, anyio.create_task_group() as group:
        followers = [Follower(http, f"{base}/api/stream") for _ in range(clients)]
        for follower in followers:
            group.start_soon(follower.follow, b"never", Finish(1))
        for follower in followers:
            await follower.connected.wait()
        before = cpu_seconds(pid)
        await anyio.sleep(seconds)
        used = cpu_seconds(pid) - before
        group.cancel_scope.cancel()
    return used


async def log_tail(base: str, clients: int, lines: int) -> float:
    done = Finish(clients)
    async with aiohttp.ClientSession() as http, anyio.create_task_group() as group:
        began = time.perf_counter()
        run_id = await trigger(http, base, "chatty", lines=lines)
        marker = f"line {lines - 1} of".encode()
        # each page opens on the run's first line: ?after=0
        url = f"{base}/api/stream?run={run_id}&after=0"
        followers = [Follower(http, url) for _ in range(clients)]  # the run row is committed
        for follower in followers:
            group.start_soon(follower.follow, marker, done)
        with anyio.fail_after(120):
            await done.all.wait()
    return max(done.times) - began


async def bench(base: str, db: Path, pid: int, quick: bool) -> None:
    n = 200 if quick else 500
    await fan_out(base, db, 0, n)  # warm-up: imports, first queries
    for clients in (0, 50, 0, 50):
        duration, last, frames = await fan_out(base, db, clients, n)
        print(
            f"fan-out, {n} mapped instances, {clients:2d} clients: run took {duration:.2f}s "
            f"as stored; last client had its end {last:.2f}s after the trigger; "
            f"{frames} frames per client"
        )
    seconds = 3.0 if quick else 6.0
    for clients in (0, 50):
        used = await idle_cpu(base, pid, clients, seconds)
        print(f"idle, {clients:2d} clients: service CPU {used * 1000:.0f} ms over {seconds:g}s")
    lines = 500 if quick else 2000
    took = await log_tail(base, 50, lines)
    print(
        f"log tail, 50 clients on ?run=, {lines} lines logged 1 s after the trigger: "
        f"all had every line {took:.2f}s after the trigger"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "flows").mkdir()
        (root / "flows" / "bench.py").write_text(FLOWS)
        port = free_port()
        env = {
            **os.environ,
            "SLUICEWAY_API_BIND": f"127.0.0.1:{port}",
            "SLUICEWAY_API_TOKEN": TOKEN,
        }
        db = root / "history.db"
        log = (root / "serve.log").open("wb")
        proc = subprocess.Popen(
            [*SLUICEWAY, "serve", "--flows", str(root / "flows"), "--db", str(db)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while b"service ready" not in (root / "serve.log").read_bytes():
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit((root / "serve.log").read_text())
                time.sleep(0.05)
            anyio.run(bench, f"http://127.0.0.1:{port}", db, proc.pid, quick)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()


if __name__ == "__main__":
    main()
