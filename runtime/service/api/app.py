"""The aiohttp application: what every route shares (the service context, the settings) and
the middlewares every request passes (errors outermost, then the guard and auth of
:mod:`.security`), and reading a JSON body within the size limit."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
from aiohttp import web

from runtime.errors import StoreError
from runtime.service.api.errors import HttpError
from runtime.service.api.listen import ApiSettings
from runtime.service.api.security import MIDDLEWARES, PAGES, SESSIONS, install_security
from runtime.service.context import ServiceContext
from runtime.service.web.errorpage import error_page, wants_html
from runtime.store import connect_reader

T = TypeVar("T")

log = logging.getLogger("sluiceway.runtime.api")

READERS = 3  # read connections of the API (requests answered at once)
MAX_BODY = 1 << 20  # 1 MiB, chunked (streamed) bodies included
CHUNK = 64 << 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Reader:
    """The API's own read connections to the store: its reads (one per request) never wait
    behind the service's (the run queue reads on every wake), and theirs not behind these.

    A small pool: SQLite releases the GIL while it reads, so a dashboard polled by many
    browsers answers several requests at once instead of queueing them on one connection.
    Connections are opened when first needed and closed with the application.
    """

    def __init__(self, path: Path, size: int = READERS) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._open: list[sqlite3.Connection] = []
        self._slots = anyio.Semaphore(size)

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a query function ``fn(conn, *args)`` of the store in a worker thread (the
        await is not abandoned on cancel, so a connection is never used by two threads)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else self._connect()
            try:
                return await anyio.to_thread.run_sync(fn, conn, *args)
            finally:
                self._idle.append(conn)

    def _connect(self) -> sqlite3.Connection:
        conn = connect_reader(self._path)
        self._open.append(conn)
        return conn

    async def close(self, app: web.Application | None = None) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()


CONTEXT = web.AppKey("context", ServiceContext)
READER = web.AppKey("reader", Reader)
SETTINGS = web.AppKey("settings", ApiSettings)


@dataclass(frozen=True, slots=True)
class Route:
    """One route of the API (the table is :data:`runtime.service.api.routes.ROUTES`).

    :ivar name: unique; aiohttp's route name (``app.router[name].url_for(...)``) and the
        OpenAPI ``operationId``
    :ivar summary: one line, for the route list and the OpenAPI document
    :ivar public: served without auth (the health checks, the login form, static files)
    :ivar page: an HTML page of the dashboard (or its static files): a browser without a
        session is sent to the login form instead of getting a JSON 401
    :ivar doc: the rest of the route's OpenAPI operation object (``parameters``,
        ``requestBody``, ``responses``, ``tags``, ``description``); the summary and the
        operationId come from the fields above
    """

    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    public: bool = False
    page: bool = False
    doc: Mapping[str, Any] = field(default_factory=dict)


def make_app(
    ctx: ServiceContext, settings: ApiSettings, routes: Sequence[Route]
) -> web.Application:
    """The application serving *routes* for the service *ctx*."""
    app = web.Application(middlewares=[errors, *MIDDLEWARES], client_max_size=MAX_BODY)
    app[CONTEXT] = ctx
    app[SETTINGS] = settings
    app[READER] = Reader(ctx.store.path)
    app.on_cleanup.append(app[READER].close)
    install_security(
        app,
        ctx.store,
        ctx.clock,
        settings,
        public=[route.handler for route in routes if route.public],
        pages=[route.handler for route in routes if route.page],
    )
    app.on_startup.append(_load_sessions)
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
    return app


async def _load_sessions(app: web.Application) -> None:
    await app[SESSIONS].load(app[READER])


# --- middlewares ---


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as the one error body: ours (:class:`HttpError`), aiohttp's (404 for an
    unknown route, 405 with ``Allow``, 413), a store that cannot commit as a 503 (nothing
    was queued: try again), and anything else as a 500 that names nothing (the traceback
    goes to the service's log, never into a response). A browser on a dashboard page gets
    the same status and message as an HTML page instead."""
    try:
        return await handler(request)
    except HttpError as exc:
        return _answer(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _answer(request, _from_aiohttp(request, exc))
    except StoreError as exc:  # a locked or failing database: nothing was queued
        log.error("api: %s %s: %s", request.method, request.path, exc)
        return _answer(
            request,
            HttpError(
                503,
                "the run history cannot be written right now, so nothing was queued; try "
                "again (with the same idempotency key); the service log says why",
                headers={"Retry-After": "5"},
            ),
        )
    except Exception:
        log.exception("api: %s %s failed", request.method, request.path)
        return _answer(request, HttpError(500, "internal error; the service log has the details"))


def _answer(request: web.Request, error: HttpError) -> web.Response:
    """The error body; the HTML error page for a browser (``Accept: text/html``) on a page
    route, or on a path that is no route and not under ``/api/``."""
    info = request.match_info
    if info.http_exception is not None:
        page = not request.path.startswith("/api/")
    else:
        page = info.handler in request.app[PAGES]
    if not (page and wants_html(request)):
        return error.response()
    try:
        response = error_page(request, error.status, error.message, error.headers)
    except Exception:  # a broken template must not hide the error it was to show
        log.exception("api: %s %s: the error page failed", request.method, request.path)
        return error.response()
    if error.close:
        response.force_close()
    return response


def _from_aiohttp(request: web.Request, exc: web.HTTPException) -> HttpError:
    target = f"{request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return HttpError(
            405, f"{target}: method not allowed (allowed: {allowed})", headers={"Allow": allowed}
        )
    if isinstance(exc, web.HTTPNotFound):
        return HttpError(404, f"{target}: no such route")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _too_large(MAX_BODY)
    return HttpError(exc.status, f"{target}: {exc.reason}")


# --- bodies ---


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 past *limit* bytes: a ``Content-Length`` over it
    at once, a chunked body as soon as the bytes read pass it (aiohttp's own limit does not
    cover a stream)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(limit: int) -> HttpError:
    # the rest of the body is not read: the connection is closed after the answer
    return HttpError(413, f"body larger than {limit} bytes", field="body", close=True)


async def read_json(request: web.Request, *, empty: Any) -> Any:
    """The body as JSON; *empty* for an empty body.

    :raises HttpError: 400 for a body that is not JSON (naming ``body``), 413 past the limit
    """
    data = await read_body(request)
    if not data.strip():
        return empty
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"body is not valid JSON: {exc}", field="body") from None
