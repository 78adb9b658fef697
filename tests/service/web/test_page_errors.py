"""The dashboard's bad paths: hostile flow params, log lines and errors are escaped; an
unknown flow or run, or a bad query value, is an HTML error page for a browser (and the
JSON error body for an API client); a failing page is a 500 that names nothing, and the
service stays up."""

from __future__ import annotations

import aiohttp
import pytest

from runtime.service.web import home
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.web.history import HOSTILE, get_page, open_history
from tests.service.web.html_tree import parse

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


async def test_hostile_values_are_escaped_everywhere(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        pages = {
            path: (await get_page(h.api, path))[1]
            for path in [
                "/flows/hostile",
                f"/runs/{h.hostile.id}",
                f"/runs/{h.hostile.id}/logs",
                "/logs?q=script",
                "/",
                "/logs?q=" + HOSTILE,
                "/runs?flow=" + HOSTILE,
            ]
        }
    for path, html in pages.items():
        assert HOSTILE not in html, path
        assert "<script>alert" not in html, path
    # and the values are there, as text
    assert ESCAPED in pages["/flows/hostile"]  # the param's default in the form
    run_page = parse(pages[f"/runs/{h.hostile.id}"])
    assert HOSTILE in run_page.by_id("log-tail").text()  # the log line, as text
    assert HOSTILE in run_page.find("details", cls="error").text()  # the error
    search = parse(pages["/logs?q=script"])
    assert any(HOSTILE in hit.text() for hit in search.find_all(cls="log-hit"))


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/flows/nope", 404, "no flow 'nope' is loaded (loaded flows: hostile, shop)"),
        ("/runs/999999", 404, "no run 999999"),
        ("/runs/abc", 404, "no run 'abc'"),
        ("/runs/999999/logs", 404, "no run 999999"),
        ("/flows/shop?limit=0", 400, "limit='0': expected a whole number from 1 to 100"),
        ("/flows/shop?limit=abc", 400, "limit='abc'"),
        ("/flows/shop?before=-1", 400, "before='-1'"),
        ("/runs?state=lost", 400, "state='lost': expected one of queued, running"),
        ("/runs/1/logs?task=a[b]", 400, "task='a[b]': expected NAME or NAME[INDEX]"),
        ("/logs?q=" + "x" * 201, 400, "q: longer than 200 characters"),
        ("/no/such/page", 404, "GET /no/such/page: no such route"),
    ],
)
async def test_a_browser_gets_an_html_error_page(
    make_runner: MakeRunner, clock: FakeClock, path: str, status: int, words: str
) -> None:
    async with open_history(make_runner, clock) as h:
        got, html, resp = await get_page(h.api, path)
        after, _, _ = await get_page(h.api, "/")  # the service is still up
    assert (got, resp.content_type) == (status, "text/html")
    doc = parse(html)
    assert words in doc.find("p", cls="message").text()
    assert doc.find("h1").text().startswith(str(status))
    assert after == 200


async def test_an_api_client_gets_the_json_error_body(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h, aiohttp.ClientSession() as http:
        for path in ["/flows/nope", "/api/nope"]:
            async with http.get(h.api.url + path, headers=h.api.headers) as resp:
                assert resp.status == 404
                assert resp.content_type == "application/json"
                assert (await resp.json())["error"]["code"] == "not_found"
        # an API path stays JSON even for a browser
        status, _html, resp = await get_page(h.api, "/api/nope")
        assert status == 404
        assert resp.content_type == "application/json"


async def test_a_page_that_fails_is_a_500_page_that_names_nothing(
    make_runner: MakeRunner, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret detail /etc/passwd")

    async with open_history(make_runner, clock) as h:
        monkeypatch.setattr(home, "home_data", broken)
        status, html, resp = await get_page(h.api, "/")
        monkeypatch.undo()
        again, _, _ = await get_page(h.api, "/")
    assert (status, resp.content_type) == (500, "text/html")
    assert "internal error" in parse(html).find("p", cls="message").text()
    assert "secret detail" not in html
    assert "Traceback" not in html
    assert again == 200
