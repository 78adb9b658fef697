"""What every request and response passes before auth: the ``Host`` check (DNS rebinding),
the ``Origin`` check of unsafe methods (cross-site requests), and the security headers
(CSP, nosniff, framing, referrer, no-store, HSTS) on every response, errors included."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from runtime.service.api.errors import HttpError
from runtime.service.api.listen import ApiSettings, is_loopback

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"  # no includeSubDomains: other hosts of the domain are not ours
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
# Sec-Fetch-Site values a browser sends for requests our own pages (or the user) make
OWN_SITES = frozenset({"same-origin", "none"})


@dataclass(frozen=True, slots=True)
class Guard:
    """The host names the server answers for, and whether it is reached over HTTPS.

    A ``Host`` that is an IP address is always accepted: DNS rebinding needs a name that
    resolves to us, and an address is no such name. Names: ``localhost`` (and the loopback
    aliases) on a loopback bind, the bind's own name, this machine's name on a wildcard bind
    (0.0.0.0, ::), and the host of ``[api] public_url``. The port is not checked: a proxy
    may forward from another one, and rebinding is about the name.
    """

    names: frozenset[str]
    public_origin: str | None
    https: bool

    @classmethod
    def of(cls, settings: ApiSettings) -> Guard:
        """The guard for a server with *settings*."""
        names = {settings.host.lower()}
        if is_loopback(settings.host) or settings.host in WILDCARDS:
            names |= LOOPBACK_NAMES
        if settings.host in WILDCARDS:
            names.add(socket.gethostname().lower())
        origin = None
        if settings.public_url is not None:
            url = urlsplit(settings.public_url)
            names.add((url.hostname or "").lower())
            origin = f"{url.scheme}://{url.netloc}".lower()
        return cls(frozenset(names - {""}), origin, settings.https)

    def host_ok(self, host: str | None) -> bool:
        """Whether the ``Host`` header *host* names this server."""
        name = _hostname(host)
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def origin_ok(self, request: web.Request) -> bool:
        """Whether an unsafe *request* comes from our own pages (or from no browser page:
        ``curl`` sends neither ``Origin`` nor ``Referer``)."""
        if request.headers.get("Sec-Fetch-Site", "none") not in OWN_SITES:
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            referer = request.headers.get("Referer")
            if referer is None:
                return True
            url = urlsplit(referer)
            origin = f"{url.scheme}://{url.netloc}"
        return self._own_origin(origin.strip().lower(), request)

    def _own_origin(self, origin: str, request: web.Request) -> bool:
        if origin == "null":  # sandboxed frames, file: pages, some redirects
            return False
        if self.public_origin is not None and origin == self.public_origin:
            return True
        url = urlsplit(origin)
        # the request's own origin: the scheme may differ behind a proxy that ends TLS
        return url.scheme in ("http", "https") and url.netloc == request.host.lower()


def _hostname(host: str | None) -> str | None:
    """The name of a ``Host`` header (``[::1]:8765`` -> ``::1``), lower-case; ``None`` for
    a missing or malformed one."""
    if not host or any(c in host for c in "/\\@ \t"):
        return None
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return name.lower() if name else None


GUARD = web.AppKey("guard", Guard)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a ``Host`` we do not answer for (421) and an unsafe method from another
    origin (403 ``cross_origin``), before anything else looks at the request."""
    checks = request.app[GUARD]
    host = request.headers.get("Host")
    if not checks.host_ok(host):
        raise HttpError(
            421,
            f"this server does not answer for Host {host!r}: reach it at its bind address, "
            "or set [api] public_url to the URL people use",
            field="Host",
            code="bad_host",
        )
    if request.method not in SAFE_METHODS and not checks.origin_ok(request):
        raise HttpError(
            403,
            f"{request.method} {request.path}: refused from another site (Origin, Referer "
            "or Sec-Fetch-Site names another origin)",
            field="Origin",
            code="cross_origin",
        )
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every response; ``no-store`` unless
    the handler chose its caching (the versioned static files)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    if request.app[GUARD].https:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
