"""The API application with its security over a real aiohttp server on 127.0.0.1 and a real
SQLite store, with the settings a test chooses (password, public_url, session TTL) and two
routes of its own: a page and an action, standing for the dashboard's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from runtime import Flow
from runtime.config import Config
from runtime.engine.runner import Runner
from runtime.service.api.app import Route, make_app
from runtime.service.api.errors import json_response
from runtime.service.api.listen import ApiSettings
from runtime.service.api.passwords import PasswordHash, hash_password, parse_hash
from runtime.service.api.routes import ROUTES
from runtime.service.context import ServiceContext
from runtime.service.web.render import render
from tests.service.api_server import TOKEN

PASSWORD = "correct horse battery staple"
FLOW = Flow("etl", params={"day": "today"})


@FLOW.task()
def extract() -> None:
    """The flow's one task (nothing runs it here: runs stay queued)."""


def cheap_hash(password: str = PASSWORD) -> PasswordHash:
    """A password hash with a small N: the tests check the logic, not scrypt's cost."""
    return parse_hash(hash_password(password, n=1 << 10))


async def page(request: web.Request) -> web.Response:
    """A dashboard page: the base layout, with the CSRF token in its meta tag."""
    return render(request, "base.html")


async def action(request: web.Request) -> web.Response:
    """A dashboard action: answers who asked."""
    return json_response({"user": request["user"]})


TEST_ROUTES = (
    Route("GET", "/test/page", page, "test_page", "a page", page=True),
    Route("POST", "/test/action", action, "test_action", "an action"),
)


@dataclass(slots=True)
class Site:
    """A serving application: its base URL, the service context and the application."""

    url: str
    ctx: ServiceContext
    app: web.Application

    def client(self) -> aiohttp.ClientSession:
        """A browser-like client: it keeps cookies for 127.0.0.1 and follows no redirect
        unless asked."""
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@asynccontextmanager
async def serve_secured(
    runner: Runner,
    *,
    token: str | None = TOKEN,
    password: PasswordHash | None = None,
    public_url: str | None = None,
    ttl: float = 3600.0,
) -> AsyncIterator[Site]:
    """Serve the API (every route of the table and :data:`TEST_ROUTES`) over *runner*."""
    ctx = ServiceContext(Config(db=runner.store.path), runner, {FLOW.name: FLOW}, epoch=1)
    settings = ApiSettings("127.0.0.1", 0, token, public_url, password, ttl)
    app = make_app(ctx, settings, [*ROUTES, *TEST_ROUTES])
    app_runner = web.AppRunner(app, access_log=None)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = app_runner.addresses[0][1]
        yield Site(f"http://127.0.0.1:{port}", ctx, app)
    finally:
        await app_runner.cleanup()


def hidden(html: str, name: str) -> str:
    """The value of hidden input *name* of a form in *html*."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden {name} in:\n{html}"
    return found.group(1)


def meta_csrf(html: str) -> str:
    """The CSRF token of a page (``<meta name="csrf-token">``)."""
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert found is not None, html
    return found.group(1)


async def log_in(
    http: aiohttp.ClientSession, site: Site, secret: str = TOKEN, next_: str = "/"
) -> aiohttp.ClientResponse:
    """Open the login form and send it with *secret*; the answer (not followed)."""
    async with http.get(site.url + "/login") as form:
        assert form.status == 200, await form.text()
        csrf = hidden(await form.text(), "csrf_token")
    data = {"secret": secret, "csrf_token": csrf, "next": next_}
    async with http.post(site.url + "/login", data=data, allow_redirects=False) as answer:
        await answer.read()
        return answer


async def session_csrf(http: aiohttp.ClientSession, site: Site) -> str:
    """The CSRF token of the logged-in session, from a page."""
    async with http.get(site.url + "/test/page", allow_redirects=False) as response:
        assert response.status == 200, response.status
        return meta_csrf(await response.text())


async def answer_of(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)
