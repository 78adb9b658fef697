"""The login form: no open redirect through ``next``, login CSRF, the brute-force slow-down
(end to end and the throttle's table), the form's DOM contract."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from runtime.service.api.login import safe_next
from runtime.service.api.security import THROTTLE
from runtime.service.api.sessions import COOKIE
from runtime.service.api.throttle import FREE, LONGEST, LoginThrottle
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN
from tests.service.secured import hidden, log_in, serve_secured

# --- next ---


@pytest.mark.parametrize(
    ("given", "followed"),
    [
        ("/runs?flow=etl", "/runs?flow=etl"),
        ("/runs/42#task-load", "/runs/42#task-load"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/%5Cevil.example", "/%5Cevil.example"),  # stays a path here: no scheme, no host
        ("javascript:alert(1)", "/"),
        ("runs", "/"),
        ("/runs\r\nSet-Cookie: x=1", "/"),
        ("/login?next=//evil.example", "/"),
        ("/logout", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_next_is_only_ever_a_path_on_this_server(given: str | None, followed: str) -> None:
    assert safe_next(given) == followed


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil.example"])
async def test_login_never_redirects_to_another_site(make_runner: MakeRunner, target: str) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        async with http.get(site.url + "/login", params={"next": target}) as form:
            assert hidden(await form.text(), "next") == "/"
        answer = await log_in(http, site, TOKEN, next_=target)
        assert answer.status == 303
        assert answer.headers["Location"] == "/"


# --- login CSRF ---


async def test_a_login_without_the_forms_token_is_refused_and_the_form_shown_again(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        # no pre-session cookie at all (a forged cross-site form), then a wrong token
        for csrf in ("", "forged"):
            data = {"secret": TOKEN, "csrf_token": csrf}
            async with http.post(site.url + "/login", data=data, allow_redirects=False) as r:
                assert r.status == 403
                assert "The form expired" in await r.text()
                assert COOKIE not in r.cookies
        # the form shown again carries a fresh token that works
        async with http.post(site.url + "/login", data={"secret": "x"}) as again:
            csrf = hidden(await again.text(), "csrf_token")
        data = {"secret": TOKEN, "csrf_token": csrf}
        async with http.post(site.url + "/login", data=data, allow_redirects=False) as r:
            assert r.status == 303


async def test_the_login_form_follows_the_dom_contract(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        serve_secured(runner) as site,
        site.client() as http,
        http.get(site.url + "/login?next=/runs") as form,
    ):
        html = await form.text()
    assert '<form id="login" method="post" action="/login">' in html
    assert 'name="secret" type="password"' in html
    assert hidden(html, "next") == "/runs"
    assert hidden(html, "csrf_token")
    assert '<button type="submit">' in html
    # the CSP allows no inline script or style: the page has none
    assert "<script>" not in html
    assert "<style" not in html
    assert "style=" not in html
    assert " onclick=" not in html


# --- brute force ---


async def test_repeated_failures_lock_the_address_out_even_for_the_right_token(
    make_runner: MakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        with caplog.at_level(logging.WARNING, "sluiceway.runtime.api"):
            for _ in range(FREE + 1):
                assert (await log_in(http, site, "guess")).status == 401
        locked = await log_in(http, site, TOKEN)
        assert locked.status == 429
        assert int(locked.headers["Retry-After"]) >= 1
        assert COOKIE not in locked.cookies
        # once the address's failures are forgotten (as after a success), it may log in
        site.app[THROTTLE].succeeded("127.0.0.1")
        assert (await log_in(http, site, TOKEN)).status == 303
    assert f"failed dashboard login from 127.0.0.1 ({FREE + 1} in a row)" in caplog.text
    assert "guess" not in caplog.text


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockouts_double_up_to_a_ceiling_and_a_success_clears_them() -> None:
    ticks = Ticks()
    throttle = LoginThrottle(ticks)
    for _ in range(FREE):
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0  # the first few are free
    waits = []
    for _ in range(14):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait("10.0.0.1"))
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == LONGEST
    ticks.now += 10
    assert throttle.wait("10.0.0.1") == LONGEST - 10
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0


def test_an_ipv6_prefix_counts_as_one_address_and_the_table_is_bounded() -> None:
    throttle = LoginThrottle(Ticks(), size=100)
    for n in range(FREE + 1):
        throttle.failed(f"2001:db8::{n + 1:x}")  # one /64, many addresses
    assert throttle.wait("2001:db8::ffff") > 0
    assert throttle.wait("2001:db8:0:1::1") == 0
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100


def test_an_address_quiet_for_long_starts_from_zero() -> None:
    ticks = Ticks()
    throttle = LoginThrottle(ticks)
    for _ in range(FREE + 3):
        throttle.failed("10.0.0.2")
    assert throttle.wait("10.0.0.2") > 0
    ticks.now += 2 * 3600
    assert throttle.wait("10.0.0.2") == 0
    throttle.failed("10.0.0.2")
    assert throttle.wait("10.0.0.2") == 0  # counted from one again


async def test_an_overlong_secret_is_refused_before_any_hashing(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, serve_secured(runner) as site, site.client() as http:
        assert (await log_in(http, site, TOKEN + "x" * 5000)).status == 401
        async with aiohttp.ClientSession() as other, other.get(site.url + "/healthz") as r:
            assert r.status == 200
