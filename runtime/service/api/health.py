"""``GET /healthz``: the process answers; served without the token."""

from __future__ import annotations

from aiohttp import web

from runtime.service.api.app import Route
from runtime.service.api.errors import json_response


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers (no token needed)."""
    return json_response({"ok": True})


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "the process answers",
        public=True,
        doc={
            "tags": ["monitoring"],
            "description": "Liveness: the event loop answers. No token needed.",
            "responses": {
                "200": {
                    "description": "alive",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["ok"],
                                "properties": {"ok": {"type": "boolean", "const": True}},
                            }
                        }
                    },
                }
            },
        },
    ),
)
