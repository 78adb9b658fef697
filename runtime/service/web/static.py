"""``GET /static/{name}``: the dashboard's vendored CSS and JavaScript.

The files of ``static/`` are read once, into memory, the first time one is asked for; a
request names one of them or gets a 404, so nothing from a request ever reaches the
filesystem. Each URL carries the content's hash (``?v=``), so browsers may keep a file for a
year and still get a new version the moment it changes.
"""

from __future__ import annotations

from aiohttp import web

from runtime.service.api.app import Route
from runtime.service.api.errors import HttpError
from runtime.service.web.assets import files, static_url

__all__ = ["ROUTES", "files", "serve_static", "static_url"]


async def serve_static(request: web.Request) -> web.Response:
    """One vendored file, cached for a year when asked for with its version."""
    found = files().get(request.match_info["name"])
    if found is None:
        raise HttpError(404, f"GET {request.path}: no such file")
    cache = "public, max-age=31536000, immutable" if "v" in request.query else "no-cache"
    headers = {"Cache-Control": cache, "ETag": f'"{found.version}"'}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if found.content_type.startswith("text/") else None
    return web.Response(
        body=found.body, content_type=found.content_type, charset=charset, headers=headers
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/static/{name}",
        serve_static,
        "static",
        "a vendored CSS or JavaScript file of the dashboard",
        public=True,  # the login form needs them; they hold nothing secret
        doc={
            "tags": ["dashboard"],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "the file"}, "404": {"description": "none"}},
        },
    ),
)
