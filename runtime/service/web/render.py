"""Rendering the dashboard's pages: one jinja2 environment (autoescaping on, undefined names
an error), and :func:`render` that gives every template what the layout needs."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from aiohttp import web

from runtime.service.web.assets import static_url
from runtime.service.web.format import FILTERS, GLOBALS

# keys the security middleware sets on a request (runtime/service/api/security.py)
CSRF_KEY = "csrf_token"  # the session's CSRF token: pages put it in <meta name="csrf-token">
USER_KEY = "user"  # who is logged in ("token" for a bearer token, else the session's name)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of ``runtime/service/web/templates`` (loaded once)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runtime.service.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = static_url
    env.globals.update(GLOBALS)
    env.filters.update(FILTERS)
    return env


def render(
    request: web.Request,
    template: str,
    values: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Template *template* rendered with *values*, plus ``csrf_token``, ``user`` and
    ``path`` (the request's path, for the navigation), as an HTML response."""
    context = {
        "csrf_token": request.get(CSRF_KEY, ""),
        "user": request.get(USER_KEY),
        "path": request.path,
        **(values or {}),
    }
    html = environment().get_template(template).render(context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
