"""The page routes in the route table: each is a page (login redirect, HTML errors), and
documented: its path parameters, query parameters with schemas, an HTML 200."""

from __future__ import annotations

import re

import pytest

from runtime.service.api.app import Route
from runtime.service.api.routes import ROUTES
from runtime.service.web.pages import ROUTES as PAGES


def test_every_page_route_is_in_the_route_table() -> None:
    table = {(r.method, r.path) for r in ROUTES}
    assert {(r.method, r.path) for r in PAGES} <= table
    assert {r.path for r in PAGES} >= {"/", "/flows/{flow}", "/runs", "/runs/{run_id}", "/logs"}


@pytest.mark.parametrize("route", PAGES, ids=[r.name for r in PAGES])
def test_page_routes_are_documented(route: Route) -> None:
    assert route.page
    assert not route.public
    assert route.method == "GET"
    doc = route.doc
    params = {(p["name"], p["in"]) for p in doc["parameters"]}
    for name in re.findall(r"{(\w+)}", route.path):
        assert (name, "path") in params
    for param in doc["parameters"]:
        assert param["schema"]
        assert param["description"]
    ok = doc["responses"]["200"]
    assert set(ok["content"]) == {"text/html"}
    for status, answer in doc["responses"].items():
        if status != "200":
            assert {"text/html", "application/json"} <= set(answer["content"])
