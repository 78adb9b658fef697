"""The HTML error page: what a browser gets instead of the JSON error body when a page
fails (an unknown flow or run, a bad query value, an internal error)."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from runtime.service.web.render import render


def wants_html(request: web.Request) -> bool:
    """Whether the client asked for HTML (browsers send ``text/html`` in ``Accept`` when
    they navigate; API clients and ``fetch`` do not)."""
    return "text/html" in request.headers.get("Accept", "")


def error_page(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """*message* (escaped) on the dashboard's layout, with *status*."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    response = render(
        request,
        "error.html",
        {"status": status, "title": title, "message": message},
        status=status,
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
