"""The route table: every route the API serves, in one place (the OpenAPI document and the
dashboard's routes are generated from / added to it)."""

from __future__ import annotations

from aiohttp import web

from runtime.service.api.app import Route
from runtime.service.api.errors import json_response
from runtime.service.api.events import send_event
from runtime.service.api.runs import create_run


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers (no token needed)."""
    return json_response({"ok": True})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, "healthz", "the process answers", public=True),
    Route(
        "POST",
        "/api/flows/{flow}/runs",
        create_run,
        "create_run",
        "queue a run of a flow (params, idempotency_key)",
    ),
    Route(
        "POST",
        "/api/events/{name}",
        send_event,
        "send_event",
        "send an event: a run of every flow with on_event(name)",
    ),
)
