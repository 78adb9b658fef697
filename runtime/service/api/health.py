"""``GET /healthz`` (the process answers) and ``GET /readyz`` (the service is ready: flows
loaded, recovery done, triggers started); both served without auth, for probes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.service.api.app import CONTEXT, Route
from runtime.service.api.errors import json_response


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers (no token needed)."""
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 ``{"ready": true, "flows": N}`` once the service is ready, else
    503 ``{"ready": false, "waiting_for": "recovery" | "start" | "stopping"}``.

    The server starts among the service's last feeders, after recovery, so a 503 is seen
    for a moment at start (``start``) and while the service stops (``stopping``)."""
    ctx = request.app[CONTEXT]
    if ctx.ready and not ctx.stopping:
        return json_response({"ready": True, "flows": len(ctx.flows)})
    waiting = "stopping" if ctx.stopping else ctx.waiting_for
    return json_response(
        {"ready": False, "waiting_for": waiting}, status=503, headers={"Retry-After": "1"}
    )


HEALTH_SCHEMA = {
    "type": "object",
    "required": ["ok"],
    "properties": {"ok": {"const": True}},
}
READY_SCHEMA = {
    "type": "object",
    "required": ["ready", "flows"],
    "properties": {"ready": {"const": True}, "flows": {"type": "integer", "minimum": 0}},
}
NOT_READY_SCHEMA = {
    "type": "object",
    "required": ["ready", "waiting_for"],
    "properties": {
        "ready": {"const": False},
        "waiting_for": {"type": "string", "enum": ["recovery", "start", "stopping"]},
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "the process answers",
        public=True,
        doc={"tags": ["health"], "responses": {"200": _json("the loop answers", HEALTH_SCHEMA)}},
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        "the service is ready: flows loaded, recovery done",
        public=True,
        doc={
            "tags": ["health"],
            "responses": {
                "200": _json("ready", READY_SCHEMA),
                "503": _json("not ready yet (or stopping)", NOT_READY_SCHEMA),
            },
        },
    ),
)
