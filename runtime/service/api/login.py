"""The dashboard's login: ``GET /login`` (the form), ``POST /login`` (the token or the
password; a session cookie on success), ``POST /logout``.

The form is protected against login CSRF by the pre-session cookie's token (and the guard's
Origin check); ``next`` is followed only when it is a path on this server, so the form is no
open redirect; failures slow the address down (:mod:`.throttle`)."""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any
from urllib.parse import urlsplit

import anyio
from aiohttp import web

from runtime.service.api.app import Route
from runtime.service.api.errors import HttpError
from runtime.service.api.listen import ApiSettings
from runtime.service.api.security import (
    API_SETTINGS,
    CHECKS,
    SESSIONS,
    THROTTLE,
    USER,
    check_csrf,
    session_of,
    set_cookie,
)
from runtime.service.api.sessions import COOKIE
from runtime.service.web.render import render

log = logging.getLogger("sluiceway.runtime.api")

MAX_NEXT = 2000
MAX_SECRET = 1024  # longer is no token and no password of ours: refused before scrypt


def safe_next(value: str | None) -> str:
    """*value* when it is a path on this server (``/runs?flow=etl``), else ``/``: never
    another site (``//evil.example``, ``/\\evil.example``, ``https://...``)."""
    if not value or len(value) > MAX_NEXT or not value.startswith("/"):
        return "/"
    if any(c in value for c in "\\\r\n\t\0"):  # browsers read "\\" as "/"
        return "/"
    url = urlsplit(value)  # "//evil.example" has a netloc
    if url.scheme or url.netloc or url.path.startswith(("/login", "/logout")):
        return "/"
    return value


def _form(
    request: web.Request, next_: str, message: str | None = None, *, status: int = 200
) -> web.Response:
    settings = request.app[API_SETTINGS]
    values: dict[str, Any] = {
        "next": next_,
        "message": message,
        "password": settings.password is not None,
        "token_file": str(settings.token_file) if settings.token_file else None,
    }
    response = render(request, "login.html", values, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _logged_in(request: web.Request) -> bool:
    return request.app[API_SETTINGS].token is None or session_of(request) is not None


async def login_form(request: web.Request) -> web.StreamResponse:
    """``GET /login[?next=PATH]``: the form; straight on to *next* when already logged in."""
    next_ = safe_next(request.query.get("next"))
    if _logged_in(request):
        return _see_other(next_)
    return _form(request, next_)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /login`` (form: ``secret``, ``csrf_token``, ``next``): 303 to *next* with the
    session cookie, or the form again with one message (401 wrong secret, 403 expired form,
    429 too many failures)."""
    form = await request.post()
    next_ = safe_next(_field(form, "next"))
    if _logged_in(request):
        return _see_other(next_)
    try:
        await check_csrf(request)
    except HttpError:
        return _form(request, next_, "The form expired: please try again.", status=403)
    throttle = request.app[THROTTLE]
    address = request.remote
    wait = throttle.wait(address)
    if wait > 0:
        response = _form(request, next_, _too_many(wait), status=429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    user = await _who(request.app[API_SETTINGS], _field(form, "secret"), request.app[CHECKS])
    if user is None:
        failures = throttle.failed(address)
        log.warning("api: failed dashboard login from %s (%d in a row)", address, failures)
        return _form(request, next_, "Wrong token or password.", status=401)
    throttle.succeeded(address)
    sessions = request.app[SESSIONS]
    cookie, session = await sessions.create(user)
    log.info("api: dashboard login (%s) from %s", user, address)
    response = _see_other(next_)
    set_cookie(response, request.app[API_SETTINGS], COOKIE, cookie, sessions.max_age(session))
    return response


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _too_many(wait: float) -> str:
    return f"Too many failed logins from your address: try again in {math.ceil(wait)} s."


async def _who(settings: ApiSettings, secret: str, checks: anyio.CapacityLimiter) -> str | None:
    """``token`` or ``password`` for the secret that matches, else ``None`` (constant time
    for the token; scrypt, off the loop and two at a time, for the password)."""
    if not secret or len(secret) > MAX_SECRET or settings.token is None:
        return None
    if hmac.compare_digest(secret.encode(), settings.token.encode()):
        return "token"
    password = settings.password
    if password is not None and await anyio.to_thread.run_sync(
        password.verify, secret, limiter=checks
    ):
        return "password"
    return None


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout``: the session ends (here and in the database); 303 to the form. The
    auth middleware checked the CSRF token of a live session."""
    session = session_of(request)
    if session is not None:
        request.app[SESSIONS].revoke(session)
        log.info("api: dashboard logout (%s) from %s", request[USER], request.remote)
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["secret", "csrf_token"],
                "properties": {
                    "secret": {"type": "string", "description": "the API token or password"},
                    "csrf_token": {"type": "string", "description": "from the login form"},
                    "next": {"type": "string", "description": "a path on this server"},
                },
            }
        }
    },
}
HTML = {"text/html": {"schema": {"type": "string"}}}
SEE_OTHER = {"description": "done: on to Location", "headers": {"Location": {"schema": {}}}}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/login",
        login_form,
        "login_form",
        "the dashboard's login form",
        public=True,
        page=True,
        doc={
            "tags": ["dashboard"],
            "parameters": [
                {
                    "name": "next",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the path to go on to (only paths on this server)",
                }
            ],
            "responses": {
                "200": {"description": "the form", "content": HTML},
                "303": {"description": "already logged in: on to next"},
            },
        },
    ),
    Route(
        "POST",
        "/login",
        login,
        "login",
        "log in with the token or the password (sets the session cookie)",
        public=True,
        page=True,
        doc={
            "tags": ["dashboard"],
            "requestBody": FORM_BODY,
            "responses": {
                "303": {**SEE_OTHER, "description": "logged in: the cookie is set"},
                "401": {"description": "wrong secret: the form again", "content": HTML},
                "403": {"description": "expired form (CSRF): the form again", "content": HTML},
                "429": {"description": "too many failures: the form again", "content": HTML},
            },
        },
    ),
    Route(
        "POST",
        "/logout",
        logout,
        "logout",
        "end the dashboard session",
        public=True,
        page=True,
        doc={
            "tags": ["dashboard"],
            "requestBody": {
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"csrf_token": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": {
                "303": {**SEE_OTHER, "description": "logged out: on to the login form"},
                "403": {"description": "missing or wrong CSRF token of the session"},
            },
        },
    ),
)
