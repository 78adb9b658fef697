"""The guard over a real server: a ``Host`` the server does not answer for (DNS rebinding), an
unsafe request from another origin, and the security headers on pages, JSON, errors and
redirects."""

from __future__ import annotations

import aiohttp
import pytest

from runtime.service.api.guard import CSP, Guard
from runtime.service.api.listen import ApiSettings
from runtime.service.api.sessions import COOKIE, PRE_COOKIE
from runtime.service.web.static import static_url
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN
from tests.service.secured import hidden, log_in, serve_secured, session_csrf

BEARER = {"Authorization": f"Bearer {TOKEN}"}


# --- Host ---


@pytest.mark.parametrize(
    ("bind", "public_url", "host", "ok"),
    [
        ("127.0.0.1", None, "127.0.0.1:8765", True),
        ("127.0.0.1", None, "localhost:8765", True),
        ("127.0.0.1", None, "LOCALHOST", True),
        ("127.0.0.1", None, "[::1]:8765", True),
        ("127.0.0.1", None, "10.1.2.3:8765", True),  # an address cannot be rebound
        ("127.0.0.1", None, "evil.example:8765", False),
        ("127.0.0.1", None, "localhost.evil.example", False),
        ("127.0.0.1", None, "", False),
        ("127.0.0.1", None, "a b", False),
        ("127.0.0.1", None, "user@localhost", False),
        ("127.0.0.1", "https://etl.example.com", "etl.example.com", True),
        ("127.0.0.1", "https://etl.example.com", "ETL.example.com:443", True),
        ("127.0.0.1", "https://etl.example.com", "other.example.com", False),
        ("etl.lan", None, "etl.lan:8765", True),
        ("etl.lan", None, "localhost:8765", False),
    ],
)
def test_the_hosts_a_server_answers_for(
    bind: str, public_url: str | None, host: str, ok: bool
) -> None:
    guard = Guard.of(ApiSettings(bind, 8765, TOKEN, public_url))
    assert guard.host_ok(host) is ok


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "rebind.127.0.0.1.nip.io"])
async def test_a_foreign_host_is_refused_with_421_even_with_the_token(
    make_runner: MakeRunner, host: str
) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/healthz", "/api/flows/etl/runs", "/login"):
            headers = {**BEARER, "Host": host}
            async with http.get(site.url + path, headers=headers) as response:
                assert response.status == 421, path
                error = (await response.json())["error"]
                assert error["code"] == "bad_host"
                assert error["field"] == "Host"
                assert "[api] public_url" in error["message"]
                assert response.headers["Content-Security-Policy"] == CSP
        async with http.get(site.url + "/healthz") as fine:  # the server is still up
            assert fine.status == 200


# --- Origin ---


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port is another origin
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["origin", "null", "port", "referer", "cross-site", "same-site"],
)
async def test_an_unsafe_request_from_another_origin_is_refused(
    make_runner: MakeRunner, headers: dict[str, str]
) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        site.client() as http,
    ):
        await log_in(http, site)
        csrf = await session_csrf(http, site)
        sent = {**headers, "X-CSRF-Token": csrf}
        async with http.post(site.url + "/test/action", headers=sent) as response:
            assert response.status == 403
            error = (await response.json())["error"]
            assert (error["code"], error["field"]) == ("cross_origin", "Origin")
        # the same request from our own page is served
        own = {"Origin": site.url, "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf}
        async with http.post(site.url + "/test/action", headers=own) as response:
            assert response.status == 200


async def test_the_login_form_is_refused_from_another_origin(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        aiohttp.ClientSession() as http,
    ):
        data = {"secret": TOKEN, "csrf_token": "x"}
        headers = {"Origin": "https://evil.example"}
        async with http.post(site.url + "/login", data=data, headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "cross_origin"


async def test_the_public_url_is_our_origin_too(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner, public_url="https://etl.example.com") as site,
        aiohttp.ClientSession() as http,
    ):
        headers = {**BEARER, "Origin": "https://etl.example.com"}
        async with http.post(site.url + "/test/action", headers=headers) as response:
            assert response.status == 200


# --- headers ---


async def test_security_headers_on_pages_json_errors_and_redirects(
    make_runner: MakeRunner,
) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        site.client() as http,
    ):
        seen = []
        for path, headers in [
            ("/login", {}),  # a page
            ("/healthz", {}),  # JSON
            ("/api/flows/nothing/runs", BEARER),  # an error (405)
            ("/api/nothing", {}),  # a 401
            ("/test/page", {}),  # a redirect to the login form
        ]:
            async with http.get(site.url + path, headers=headers, allow_redirects=False) as r:
                seen.append((path, r.status, dict(r.headers)))
        async with http.get(site.url + static_url("app.css")) as r:
            static = dict(r.headers)
    assert [status for _, status, _ in seen] == [200, 200, 405, 401, 303]
    for path, _, headers in seen:
        assert headers["Content-Security-Policy"] == CSP, path
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "same-origin", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert headers["Cache-Control"] == "no-store", path
        assert "Strict-Transport-Security" not in headers, path  # not over plain http
    # the versioned static files keep their own caching, and the other headers
    assert "immutable" in static["Cache-Control"]
    assert static["X-Content-Type-Options"] == "nosniff"


async def test_https_public_url_adds_hsts_and_secure_cookies(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner, public_url="https://etl.example.com") as site,
        aiohttp.ClientSession() as http,  # no cookie jar: Secure cookies are sent by hand
    ):
        async with http.get(site.url + "/login") as form:
            assert form.headers["Strict-Transport-Security"] == "max-age=31536000"
            pre = form.cookies[PRE_COOKIE]
            assert pre["secure"] is True
            csrf = hidden(await form.text(), "csrf_token")
        data = {"secret": TOKEN, "csrf_token": csrf}
        cookie = {"Cookie": f"{PRE_COOKIE}={pre.value}"}
        async with http.post(
            site.url + "/login", data=data, headers=cookie, allow_redirects=False
        ) as answer:
            assert answer.status == 303
            assert answer.cookies[COOKIE]["secure"] is True
            assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
