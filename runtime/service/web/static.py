"""``GET /static/{name}``: the dashboard's vendored CSS and JavaScript.

The files of ``static/`` are read once, into memory, the first time one is asked for; a
request names one of them or gets a 404, so nothing from a request ever reaches the
filesystem. Each URL carries the content's hash (``?v=``), so browsers may keep a file for a
year and still get a new version the moment it changes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from runtime.service.api.app import Route
from runtime.service.api.errors import HttpError

FOLDER = Path(__file__).parent / "static"
TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str  # the first 12 hex digits of the content's sha256


@functools.cache
def files() -> dict[str, StaticFile]:
    """Every file of :data:`FOLDER` by name (read once)."""
    out: dict[str, StaticFile] = {}
    for path in sorted(FOLDER.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            version = hashlib.sha256(body).hexdigest()[:12]
            out[path.name] = StaticFile(body, TYPES[path.suffix], version)
    return out


def static_url(name: str) -> str:
    """The URL of static file *name*, with its version (templates call it ``static``).

    :raises KeyError: for a file that is not there (a template naming a missing file fails
        its tests, not a user's page)
    """
    return f"/static/{name}?v={files()[name].version}"


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
