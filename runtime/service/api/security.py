"""Who is asking: the auth middleware (a bearer token, or the dashboard's session cookie) and
the CSRF check of every unsafe request a browser makes.

- ``Authorization: Bearer <token>``: API clients and ``curl``; compared in constant time;
  no CSRF token needed (a browser never adds that header by itself).
- the ``sluiceway_session`` cookie set by ``POST /login``: an unsafe method must carry the
  session's CSRF token in ``X-CSRF-Token`` or in a ``csrf_token`` form field.
- ``auth = "none"`` (loopback only): everyone is ``anonymous``, but an unsafe request from a
  browser (it sends ``Origin``, ``Sec-Fetch-Site`` or cookies) still needs the CSRF token of
  its pre-session cookie.

Without auth, a page route (``Route.page``) answers 303 to ``/login?next=...``, anything
else 401 JSON. The health checks and the login form are public.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Sequence
from urllib.parse import urlencode

import anyio
from aiohttp import web

from runtime.clock import Clock
from runtime.service.api.errors import HttpError
from runtime.service.api.guard import (
    GUARD,
    SAFE_METHODS,
    Guard,
    Handler,
    add_security_headers,
    guard,
)
from runtime.service.api.listen import ApiSettings
from runtime.service.api.sessions import COOKIE, PRE_COOKIE, Session, Sessions
from runtime.service.api.throttle import LoginThrottle
from runtime.store import Store

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
USER = "user"  # request["user"]: "token", "password" (a session's secret) or "anonymous"
CSRF = "csrf_token"  # request["csrf_token"]: what pages put in <meta name="csrf-token">
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")

SESSIONS = web.AppKey("sessions", Sessions)
API_SETTINGS = web.AppKey("security settings", ApiSettings)
OPEN = web.AppKey("open handlers", frozenset)  # handlers served without auth
PAGES = web.AppKey("page handlers", frozenset)  # handlers of HTML pages
THROTTLE = web.AppKey("login throttle", LoginThrottle)  # failed logins per address
# scrypt takes 32 MiB and most of a core per password check: two at a time, whatever arrives
CHECKS = web.AppKey("password checks", anyio.CapacityLimiter)
SESSION = web.RequestKey("session", Session)  # the session of a session's request


def install_security(
    app: web.Application,
    store: Store,
    clock: Clock,
    settings: ApiSettings,
    public: Sequence[Handler],
    pages: Sequence[Handler],
) -> None:
    """Give *app* its guard, sessions and security headers; :data:`MIDDLEWARES` must be in
    its middlewares (after the errors middleware)."""
    app[GUARD] = Guard.of(settings)
    app[API_SETTINGS] = settings
    app[SESSIONS] = Sessions(store, clock, settings)
    app[OPEN] = frozenset(public)
    app[PAGES] = frozenset(pages)
    app[THROTTLE] = LoginThrottle()
    app[CHECKS] = anyio.CapacityLimiter(2)
    app.on_response_prepare.append(add_security_headers)


def _handler(request: web.Request) -> Handler | None:
    route = request.match_info.route
    return route.handler if route is not None else None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set ``request["user"]`` (and for a browser ``request["csrf_token"]``), check the CSRF
    token of unsafe requests, and refuse a request without auth unless its route is public.
    Checked before the route is: without auth an unknown route is a 401 too, so the API's
    shape is not shown to strangers."""
    settings = request.app[API_SETTINGS]
    sessions = request.app[SESSIONS]
    unsafe = request.method not in SAFE_METHODS
    public = _handler(request) in request.app[OPEN]
    bearer = request.headers.get("Authorization")
    if bearer is not None and settings.token is not None:
        problem = _bearer_problem(bearer, settings.token)
        if problem is None:
            _put(request, USER, "token")
            return await handler(request)
        if not public:  # a stale token on a probe of /healthz is no reason to refuse it
            raise _unauthorized(problem)
    cookie = request.cookies.get(COOKIE)
    session = sessions.check(cookie) if settings.token is not None else None
    if session is not None:
        _put(request, USER, session.user)
        _put(request, CSRF, session.csrf)
        request[SESSION] = session
        if unsafe:
            await _check_csrf(request, session.csrf)
        return await handler(request)
    pre, fresh = _pre_session(request, sessions)
    if settings.token is None:  # auth = "none": everyone, but browsers show a CSRF token
        _put(request, USER, "anonymous")
        if unsafe and _from_browser(request):
            await _check_csrf(request, request[CSRF])
    elif not public:
        if _handler(request) in request.app[PAGES] and not unsafe:
            return _to_login(request, clear=cookie is not None)
        raise _unauthorized(
            "session expired or logged out: log in again"
            if cookie is not None
            else "missing bearer token: send Authorization: Bearer <token>",
            clear=cookie is not None,
        )
    response = await handler(request)
    # only pages carry the token: health probes and API answers get no cookie
    if fresh and not response.prepared and response.content_type == "text/html":
        set_cookie(response, settings, PRE_COOKIE, pre)
    return response


def _put(request: web.Request, key: str, value: str) -> None:
    """``request[key] = value`` for the dashboard's string keys (``user``, ``csrf_token``),
    which every part reads. aiohttp 3.14 warns about string keys (it prefers RequestKey);
    the contract names these as strings, so the warning is silenced here, for them only (no
    await inside: nothing else runs meanwhile)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request[key] = value


def _bearer_problem(header: str, token: str) -> str | None:
    """What is wrong with the ``Authorization`` header *header*; ``None`` for the token
    (compared in constant time)."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "missing bearer token: send Authorization: Bearer <token>"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "wrong bearer token"
    return None


def _pre_session(request: web.Request, sessions: Sessions) -> tuple[str, bool]:
    """The pre-session cookie's value (a new one when the browser has none: True) and its
    CSRF token in ``request["csrf_token"]``."""
    pre = request.cookies.get(PRE_COOKIE)
    fresh = not pre
    if not pre:
        pre = sessions.new_pre_session()
    _put(request, CSRF, sessions.pre_session_csrf(pre))
    return pre, fresh


def _from_browser(request: web.Request) -> bool:
    headers = request.headers
    return any(name in headers for name in ("Origin", "Sec-Fetch-Site", "Cookie", "Referer"))


async def check_csrf(request: web.Request) -> None:
    """Check the CSRF token of *request* against ``request["csrf_token"]`` (the login form
    calls it; the middleware does for everything else).

    :raises HttpError: 403 ``csrf``
    """
    await _check_csrf(request, request.get(CSRF, ""))


async def _check_csrf(request: web.Request, expected: str) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in FORMS:
        form = await request.post()  # kept by aiohttp: the handler reads it again for free
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        what = "missing" if not given else "wrong"
        raise HttpError(
            403,
            f"{request.method} {request.path}: {what} CSRF token: send the page's "
            f'<meta name="csrf-token"> in {CSRF_HEADER} or a {CSRF_FIELD} form field',
            field=CSRF_HEADER,
            code="csrf",
        )


def _unauthorized(message: str, *, clear: bool = False) -> HttpError:
    headers = {"WWW-Authenticate": 'Bearer realm="sluiceway"'}
    if clear:
        headers["Set-Cookie"] = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
    return HttpError(401, message, headers=headers)


def _to_login(request: web.Request, *, clear: bool) -> web.Response:
    location = "/login?" + urlencode({"next": request.rel_url.path_qs})
    response = web.Response(status=303, headers={"Location": location})
    if clear:
        response.del_cookie(COOKIE, path="/")
    return response


def set_cookie(
    response: web.StreamResponse, settings: ApiSettings, name: str, value: str, max_age: int = 0
) -> None:
    """Set cookie *name*: HttpOnly, SameSite=Strict, Path=/, Secure over HTTPS; for the
    browser's session when *max_age* is 0."""
    response.set_cookie(
        name,
        value,
        max_age=max_age or None,
        path="/",
        secure=settings.https or None,
        httponly=True,
        samesite="Strict",
    )


def session_of(request: web.Request) -> Session | None:
    """The session *request* is authenticated by, if it is."""
    return request.get(SESSION)


# after the errors middleware, in this order: a wrong Host is refused before auth is looked at
MIDDLEWARES = (guard, authenticate)
