"""``GET /api/stream``: live updates as server-sent events, for the dashboard's pages and for
anyone who wants to follow runs (``curl -N``).

Events: ``run`` ``{"run_id", "flow", "state", "ts"}`` (queued, running and every end state),
``task`` ``{"run_id", "flow", "task", "name", "index", "state", "attempt", "ts"}`` and, with
``?run=``, ``log`` ``{"id", "run_id", "task", "ts", "level", "message"}`` (its SSE id is the
line's id); a ``: ping`` comment every 15 s; ``resync`` before the stream closes when the
client fell more than 1,000 events behind (reload what you show, then reconnect).
"""

from __future__ import annotations

import anyio
from aiohttp import web

from runtime.service.api.app import READER, Route
from runtime.service.api.errors import HttpError
from runtime.service.api.openapi import ERROR_RESPONSE
from runtime.service.api.sse import HELLO, RESYNC
from runtime.service.api.streamclient import Client, StreamLimits
from runtime.service.api.streams import StreamHub
from runtime.service.context import ServiceContext
from runtime.store import live

STREAMS = web.AppKey("streams", StreamHub)
QUERY = ("run", "flow", "after")
MAX_FLOW = 200  # characters of a flow name in ?flow=


def attach_streams(app: web.Application, ctx: ServiceContext, limits: StreamLimits) -> StreamHub:
    """Give *app* its stream hub (before the app starts); its streams end when the app shuts
    down, before aiohttp waits for the requests in flight. The caller runs
    :meth:`StreamHub.run` in its task group."""
    hub = StreamHub(ctx, app[READER], limits)
    app[STREAMS] = hub

    async def end_streams(app: web.Application) -> None:
        hub.end_all()

    app.on_shutdown.append(end_streams)
    return hub


def _number(request: web.Request, name: str, *, least: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or int(text) < least:
        raise HttpError(
            400, f"?{name}={text!r}: expected an integer of at least {least}", field=name
        )
    return int(text)


def _filters(request: web.Request) -> tuple[int | None, str | None, int | None]:
    """(run, flow, log lines after) of the query.

    :raises HttpError: 400 naming the parameter at fault
    """
    for name in request.query:
        if name not in QUERY:
            raise HttpError(
                400, f"unknown query parameter {name!r} (known: {', '.join(QUERY)})", field=name
            )
    run = _number(request, "run", least=1)
    after = _number(request, "after", least=0)
    flow = request.query.get("flow")
    if flow is not None and not 0 < len(flow) <= MAX_FLOW:
        raise HttpError(
            400, f"?flow=: expected a flow name of 1 to {MAX_FLOW} characters", field="flow"
        )
    if run is not None and flow is not None:
        raise HttpError(
            400, "?run= and ?flow= together: send one (a run has one flow)", field="flow"
        )
    if after is not None and run is None:
        raise HttpError(400, "?after= needs ?run= (log lines are sent for one run)", field="after")
    resumed = request.headers.get("Last-Event-ID", "")
    if run is not None and resumed.isascii() and resumed.isdigit():
        after = max(after or 0, int(resumed))  # a browser reconnecting: after what it got
    return run, flow, after


async def stream(request: web.Request) -> web.StreamResponse:
    """The live stream (see the module's docstring); filters ``?run=ID`` (with ``?after=``,
    the log id to continue after) or ``?flow=NAME``."""
    run, flow, after = _filters(request)
    hub = request.app.get(STREAMS)
    if hub is None or hub.stopped:
        raise HttpError(503, "live updates are not served now (the service is stopping)")
    if run is not None and await request.app[READER](live.run_state, run) is None:
        raise HttpError(404, f"no run {run}", field="run", code="unknown_run")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front (nginx) must not hold events back
        }
    )
    client = hub.open(run=run, flow=flow, log_after=after)
    try:
        await hub.ready()  # a run queued once the client has its answer is announced
        await response.prepare(request)
        await response.write(HELLO)
        await _pump(client, response, hub.limits.coalesce)
    except ConnectionResetError:
        pass  # the client went away
    finally:
        hub.close(client)
    if client.scope.cancelled_caught and request.transport is not None:
        request.transport.abort()  # a write that did not finish in time: cut the connection
    return response


async def _pump(client: Client, response: web.StreamResponse, coalesce: float) -> None:
    """Write what the hub buffers for *client* until its buffer is closed; then, if it was
    dropped for falling behind, ``event: resync``. Under the client's cancel scope: a client
    that stops reading is cut off in time."""
    with client.scope:
        async for first in client.receive:
            await anyio.sleep(coalesce)  # let a busy moment's events gather
            frames = [first]
            while True:
                try:
                    frames.append(client.receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await response.write(b"".join(frames))
        if client.dropped:
            await response.write(RESYNC)


_ERROR = {"$ref": ERROR_RESPONSE}

_EVENTS = (
    "Server-sent events, one JSON object per `data:` line. `event: run` "
    '`{"run_id", "flow", "state", "ts"}`; `event: task` `{"run_id", "flow", "task", "name", '
    '"index", "state", "attempt", "ts"}`; with `?run=`, `event: log` `{"id", "run_id", '
    '"task", "ts", "level", "message"}` (SSE `id:` = the log id); `event: resync` when the '
    "client fell behind (the stream then ends); a `: ping` comment every 15 s; `retry: 2000`."
)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/stream",
        stream,
        "stream",
        "live run, task and log events (server-sent events)",
        doc={
            "tags": ["live"],
            "description": _EVENTS,
            "parameters": [
                {
                    "name": "run",
                    "in": "query",
                    "description": "only this run's events, and its log lines",
                    "schema": {"type": "integer", "minimum": 1},
                },
                {
                    "name": "after",
                    "in": "query",
                    "description": "with run: send log lines with an id above this one "
                    "(default: only lines written from now on)",
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "flow",
                    "in": "query",
                    "description": "only this flow's run and task events",
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_FLOW},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "sent by a reconnecting browser: log lines continue after it",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": _EVENTS,
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _ERROR,
                "401": _ERROR,
                "404": _ERROR,
                "503": _ERROR,
            },
        },
    ),
)
