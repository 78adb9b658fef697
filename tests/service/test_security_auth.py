"""Who may ask, over a real server and store: the bearer token, the session cookie of the login
form (forged, tampered, expired, logged out, after a restart, after a token change), the CSRF
token of a session's unsafe requests, pages sent to the login form, ``auth = "none"``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from runtime.service.api.security import SESSIONS
from runtime.service.api.sessions import COOKIE
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN
from tests.service.secured import (
    PASSWORD,
    answer_of,
    cheap_hash,
    hidden,
    log_in,
    meta_csrf,
    serve_secured,
    session_csrf,
)

RUNS = "/api/flows/etl/runs"


def count_runs(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


def sessions_in_db(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id_hash, user FROM sessions").fetchall()
    finally:
        conn.close()


def cookie_of(http: aiohttp.ClientSession) -> str:
    found = [c.value for c in http.cookie_jar if c.key == COOKIE]
    assert found, "no session cookie"
    return found[0]


# --- the bearer token ---


async def test_the_bearer_token_is_a_user_and_needs_no_csrf(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(site.url + "/test/action", headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {"user": "token"}
        async with http.post(site.url + "/test/action") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="sluiceway"'
            assert (await response.json())["error"]["code"] == "unauthorized"


async def test_a_wrong_token_on_a_public_route_is_no_reason_to_refuse_it(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        stale = {"Authorization": "Bearer an-old-token"}
        async with http.get(site.url + "/healthz", headers=stale) as response:
            assert response.status == 200
        async with http.get(site.url + "/test/page", headers=stale) as response:
            assert response.status == 401  # not public: the wrong token is refused
            assert "wrong bearer token" in (await response.json())["error"]["message"]


# --- the session cookie ---


async def test_login_sets_a_strict_httponly_cookie_and_the_session_is_a_user(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        answer = await log_in(http, site, TOKEN, next_="/runs?flow=etl")
        assert answer.status == 303
        assert answer.headers["Location"] == "/runs?flow=etl"
        morsel = answer.cookies[COOKIE]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/"
        assert not morsel["secure"]  # plain http here: see the https test
        assert 3500 <= int(morsel["max-age"]) <= 3600
        csrf = await session_csrf(http, site)
        headers = {"X-CSRF-Token": csrf}
        async with http.post(site.url + "/test/action", headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {"user": "token"}
    # only the id's hash is stored: the cookie's secret part is nowhere in the database
    rows = sessions_in_db(db_path)
    assert [user for _, user in rows] == ["token"]
    assert cookie_of(http).split(".")[0] not in repr(rows)


async def test_the_password_logs_in_too_and_a_wrong_secret_is_a_401_form(
    make_runner: MakeRunner,
) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner, password=cheap_hash()) as site,
        site.client() as http,
    ):
        wrong = await log_in(http, site, "not the password")
        assert wrong.status == 401
        assert COOKIE not in wrong.cookies
        answer = await log_in(http, site, PASSWORD)
        assert answer.status == 303
        csrf = await session_csrf(http, site)
        async with http.post(site.url + "/test/action", headers={"X-CSRF-Token": csrf}) as r:
            assert await r.json() == {"user": "password"}


async def test_a_wrong_secret_shows_the_form_again_with_one_message(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        async with http.get(site.url + "/login?next=/runs") as form:
            csrf = hidden(await form.text(), "csrf_token")
        data = {"secret": TOKEN + "x", "csrf_token": csrf, "next": "/runs"}
        async with http.post(site.url + "/login", data=data, allow_redirects=False) as answer:
            html = await answer.text()
            assert answer.status == 401
            assert answer.content_type == "text/html"
    assert html.count('role="alert"') == 1
    assert "Wrong token or password." in html
    assert 'name="next" value="/runs"' in html  # where to go after is kept
    assert TOKEN not in html


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c + "x",
        lambda c: ("B" if c.startswith("A") else "A") + c[1:],
        lambda c: c.split(".")[0],
        lambda c: c.split(".")[0] + ".forged-mac",
        lambda c: "x" * 300,
    ],
    ids=["mac-extended", "id-changed", "no-mac", "forged-mac", "huge"],
)
async def test_a_tampered_or_forged_cookie_is_no_session(
    make_runner: MakeRunner, tamper: object
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        await log_in(http, site)
        forged = tamper(cookie_of(http))  # type: ignore[operator]
        async with (
            aiohttp.ClientSession() as other,
            other.post(site.url + "/test/action", headers={"Cookie": f"{COOKIE}={forged}"}) as r,
        ):
            assert r.status == 401
            assert "session expired or logged out" in (await r.json())["error"]["message"]
            assert "Max-Age=0" in r.headers["Set-Cookie"]  # the bad cookie is cleared


async def test_a_session_expires_after_its_ttl(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner, ttl=600) as site,
        site.client() as http,
    ):
        await log_in(http, site)
        clock.advance(599)
        async with http.get(site.url + "/test/page", allow_redirects=False) as response:
            assert response.status == 200
        clock.advance(2)
        async with http.get(site.url + "/test/page", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/login?next=%2Ftest%2Fpage"
        assert len(site.app[SESSIONS]) == 0


async def test_logout_ends_the_session_here_and_in_the_database(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        await log_in(http, site)
        cookie = cookie_of(http)
        csrf = await session_csrf(http, site)
        data = {"csrf_token": csrf}
        async with http.post(site.url + "/logout", data=data, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/login"
        await runner.store.writer.flush()
        assert sessions_in_db(db_path) == []
        # the old cookie, replayed, is no session any more
        async with (
            aiohttp.ClientSession() as other,
            other.get(
                site.url + "/test/page",
                headers={"Cookie": f"{COOKIE}={cookie}"},
                allow_redirects=False,
            ) as r,
        ):
            assert r.status == 303


async def test_logout_without_the_csrf_token_is_refused(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        await log_in(http, site)
        async with http.post(site.url + "/logout", allow_redirects=False) as r:
            assert r.status == 403
        async with http.get(site.url + "/test/page", allow_redirects=False) as r:
            assert r.status == 200  # still logged in


async def test_a_session_survives_a_restart_but_not_a_token_change(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner:
        async with serve_secured(runner) as site, site.client() as http:
            await log_in(http, site)
            cookie = cookie_of(http)
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        async with serve_secured(runner) as site, aiohttp.ClientSession() as http:
            async with http.get(site.url + "/test/page", headers=headers) as r:
                assert r.status == 200  # loaded from the database
                csrf = meta_csrf(await r.text())
            sent = {**headers, "X-CSRF-Token": csrf}
            async with http.post(site.url + "/test/action", headers=sent) as r:
                assert await r.json() == {"user": "token"}  # its CSRF token works too
        async with (
            serve_secured(runner, token=TOKEN + "-rotated") as site,
            aiohttp.ClientSession() as http,
            http.get(site.url + "/test/page", headers=headers, allow_redirects=False) as r,
        ):
            assert r.status == 303  # a new token: everybody logs in again


# --- CSRF ---


async def test_a_session_post_needs_the_csrf_token_and_nothing_is_queued_without(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        await log_in(http, site)
        csrf = await session_csrf(http, site)
        body = orjson.dumps({"params": {"day": "monday"}})
        async with http.post(site.url + RUNS, data=body) as missing:
            assert missing.status == 403
            error = (await missing.json())["error"]
            assert error["code"] == "csrf"
            assert error["field"] == "X-CSRF-Token"
            assert "missing CSRF token" in error["message"]
        async with http.post(site.url + RUNS, data=body, headers={"X-CSRF-Token": "x"}) as wrong:
            assert wrong.status == 403
            assert "wrong CSRF token" in (await wrong.json())["error"]["message"]
        await runner.store.writer.flush()
        assert count_runs(db_path) == 0
        async with http.post(site.url + RUNS, data=body, headers={"X-CSRF-Token": csrf}) as ok:
            assert ok.status == 201, await ok.text()
    assert count_runs(db_path) == 1


@pytest.mark.parametrize(("field", "status"), [("right", 200), ("wrong", 403), (None, 403)])
async def test_a_form_post_carries_the_csrf_token_as_a_field(
    make_runner: MakeRunner, field: str | None, status: int
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        await log_in(http, site)
        csrf = await session_csrf(http, site)
        data = {"other": "value"}
        if field is not None:
            data["csrf_token"] = csrf if field == "right" else csrf[:-2] + "xx"
        async with http.post(site.url + "/test/action", data=data) as response:
            assert response.status == status
            if status == 403:
                assert (await answer_of(response))["error"]["code"] == "csrf"


async def test_each_session_has_its_own_csrf_token(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        site.client() as alice,
        site.client() as bob,
    ):
        await log_in(alice, site)
        await log_in(bob, site)
        alice_csrf = await session_csrf(alice, site)
        assert alice_csrf != await session_csrf(bob, site)
        async with bob.post(
            site.url + "/test/action", headers={"X-CSRF-Token": alice_csrf}
        ) as response:
            assert response.status == 403


# --- pages and API routes without auth ---


async def test_a_page_without_auth_goes_to_the_login_form_and_an_api_route_gets_401(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        async with http.get(site.url + "/test/page?x=1&y=2", allow_redirects=False) as page:
            assert page.status == 303
            assert page.headers["Location"] == "/login?next=%2Ftest%2Fpage%3Fx%3D1%26y%3D2"
        async with http.get(site.url + "/api/nothing") as api:
            assert api.status == 401
            assert api.content_type == "application/json"
        # the health checks, the login form and the static files stay public
        for path in ("/healthz", "/login", "/static/app.css"):
            async with http.get(site.url + path, allow_redirects=False) as response:
                assert response.status == 200, path
        # after logging in, the login form sends on to next
        await log_in(http, site)
        async with http.get(site.url + "/login?next=/runs", allow_redirects=False) as again:
            assert again.status == 303
            assert again.headers["Location"] == "/runs"


# --- auth = "none" ---


async def test_auth_none_lets_everyone_in_but_a_browser_post_needs_the_csrf_token(
    make_runner: MakeRunner,
) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner, token=None) as site,
        site.client() as http,
    ):
        # an API client (no Origin, no cookie): served
        async with aiohttp.ClientSession() as curl, curl.post(site.url + "/test/action") as r:
            assert await r.json() == {"user": "anonymous"}
        # a browser: its page carries a token bound to its pre-session cookie
        csrf = await session_csrf(http, site)
        browser = {"Origin": site.url, "Sec-Fetch-Site": "same-origin"}
        async with http.post(site.url + "/test/action", headers=browser) as refused:
            assert refused.status == 403
            assert (await refused.json())["error"]["code"] == "csrf"
        headers = {**browser, "X-CSRF-Token": csrf}
        async with http.post(site.url + "/test/action", headers=headers) as served:
            assert await served.json() == {"user": "anonymous"}
        # nothing to log in to
        async with http.get(site.url + "/login?next=/runs", allow_redirects=False) as login:
            assert login.status == 303
