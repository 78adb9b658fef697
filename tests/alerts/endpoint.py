"""A real HTTP endpoint on 127.0.0.1 in its own thread and event loop, standing in for a
webhook: it records every request and answers as the test scripts it (a status, headers, or
never). Usable from sync tests (beside a service subprocess) and async ones alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.waiting import WAIT, wait_until


@dataclass
class Reply:
    """One answer: a status and headers, or none at all (*hang*)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what it was answered; None while (or if never) answered

    def json(self) -> Any:
        return orjson.loads(self.body)


class Endpoint:
    """``replies`` are used in order, the last one again once they run out."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = [Reply()]
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None

    def answer(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answered(self, path: str | None = None) -> list[Received]:
        """The requests answered 2xx (on *path*)."""
        with self._lock:
            return [
                r
                for r in self.received
                if r.status is not None and 200 <= r.status < 300 and path in (None, r.path)
            ]

    def wait_answered(self, count: int, path: str | None = None) -> list[Received]:
        def enough() -> list[Received] | None:
            got = self.answered(path)
            return got if len(got) >= count else None

        return wait_until(
            enough,
            f"{count} answered request(s) at the endpoint",
            timeout=WAIT,
            details=lambda: f"received: {self.received}",
        )

    def wait_received(self, count: int) -> list[Received]:
        def enough() -> list[Received] | None:
            return list(self.received) if len(self.received) >= count else None

        return wait_until(
            enough,
            f"{count} request(s) at the endpoint",
            details=lambda: f"received: {self.received}",
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        got = Received(request.path, dict(request.headers), body)
        with self._lock:
            self.received.append(got)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.hang:
            assert self._release is not None
            await self._release.wait()
        got.status = reply.status
        return web.Response(status=reply.status, text="ok", headers=reply.headers)

    def _serve(self, ready: threading.Event, stop: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - stop is a threading.Event
                await asyncio.sleep(0.05)
            self._release.set()
            await runner.cleanup()

        asyncio.run(main())


@contextmanager
def running_endpoint() -> Iterator[Endpoint]:
    """An :class:`Endpoint` serving for the block."""
    endpoint = Endpoint()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=endpoint._serve, args=(ready, stop), daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the endpoint did not start"
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(WAIT)
