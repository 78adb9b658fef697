"""Real local endpoints for the notifier tests: an aiohttp server on 127.0.0.1 that records
what it was sent and answers as the test scripts it (a status, a body, headers, or never), and
a canary secret that must show up nowhere."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from runtime import redact

CANARY = "canary-5ecret-9f3b7d"
"""Planted in URLs, routing keys, HMAC secrets and passwords; searched for in every output."""


@dataclass
class Received:
    """One request the endpoint got."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Reply:
    """What the endpoint answers: a status, a body and headers, or nothing at all (*hang*)."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class Endpoint:
    """An HTTP server on 127.0.0.1 standing in for a webhook, Slack or PagerDuty.

    ``replies`` are used in order, the last one again once they run out; ``received`` lists
    every request; ``url(path)`` is its address.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = [Reply()]
        self.release = asyncio.Event()  # lets hanging handlers return at teardown
        self.port = 0

    def answer(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path, dict(request.headers), body))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.hang:
            await self.release.wait()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """A running :class:`Endpoint`."""
    server = Endpoint()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site.port
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Notifiers register their secrets process-wide; forget them after each test."""
    yield
    redact.forget_all()


def alert(**fields: Any) -> dict[str, Any]:
    """A run.failed alert as the outbox builds it, with *fields* changed."""
    base: dict[str, Any] = {
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
        "details": None,
        "items": [],
        "resolves": [],
    }
    base.update(fields)
    return base
