"""Notifier bench: what one delivery costs, from ``send()`` to the answer, against a local
aiohttp server on 127.0.0.1 (so the figure is ours and aiohttp's, not the network's).

Run from the repository root (prints figures, never asserts on time):

    .venv/bin/python bench/notifiers.py            # 300 deliveries per case
    .venv/bin/python bench/notifiers.py -n 1000

Cases: the webhook (JSON + HMAC signature), Slack (Block Kit), PagerDuty (Events API v2), each
opening a client session per delivery as the notifiers do, and, for comparison, a bare POST
on one reused session: the difference is what a session (and its connection) per delivery
costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from plugins.notifiers.pagerduty import PagerDutyNotifier
from plugins.notifiers.slack import SlackNotifier
from plugins.notifiers.webhook import WebhookNotifier

ALERT = {
    "id": "sluiceway-17",
    "kind": "alert",
    "event": "run.failed",
    "summary": "orders run 12 failed: failed tasks: load",
    "flow": "orders",
    "run_id": 12,
    "task": "load",
    "state": "failed",
    "error": "ConnectionError: warehouse refused the connection",
    "logical_date": "2026-01-02T00:00:00Z",
    "ts": "2026-01-02T00:05:00Z",
    "url": "https://sluiceway.example/runs/12",
    "details": {},
    "items": [],
    "resolves": [],
}


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    """Milliseconds of each of *n* sequential calls (after 10 to warm up)."""
    for _ in range(10):
        await call()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e3)
    return out


def line(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<34} p50 {statistics.median(ms):6.2f} ms   p99 {p99:6.2f} ms"


async def main(n: int) -> None:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202 if "enqueue" in request.path else 200, text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site.port}"
    try:
        hook = WebhookNotifier("ops", {"url": f"{base}/hook", "secret": "bench-secret"})
        slack = SlackNotifier("team", {"url": f"{base}/services/T/B/X"})
        pager = PagerDutyNotifier("oncall", {"url": f"{base}/v2/enqueue", "routing_key": "k" * 32})
        print(f"{n} deliveries each, sequential, loopback:")
        print(line("webhook (session per delivery)", await timed(n, lambda: hook.send(ALERT))))
        print(line("slack (session per delivery)", await timed(n, lambda: slack.send(ALERT))))
        print(line("pagerduty (session per delivery)", await timed(n, lambda: pager.send(ALERT))))
        async with aiohttp.ClientSession() as session:

            async def bare() -> None:
                async with session.post(f"{base}/hook", data=b"{}") as response:
                    await response.read()

            print(line("bare POST, one reused session", await timed(n, bare)))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="deliveries per case")
    asyncio.run(main(parser.parse_args().n))
