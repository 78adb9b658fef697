"""The dashboard's pages over a real served API and a store holding real runs made by the
real runner: the DOM contract's elements, their states, escaping, and the HTML error page."""

from __future__ import annotations

from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.web.history import HOSTILE, get_page, open_history
from tests.service.web.html_tree import parse


async def test_smoke(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        for path in [
            "/",
            "/flows/shop",
            "/runs",
            f"/runs/{h.ok.id}",
            f"/runs/{h.failed.id}",
            f"/runs/{h.hostile.id}",
            "/logs?q=item",
            f"/runs/{h.ok.id}/logs",
            "/flows/hostile",
        ]:
            status, html, _ = await get_page(h.api, path)
            print(path, status)
            if status != 200:
                print(html)
            assert status == 200
            parse(html)
            assert HOSTILE not in html
