"""``GET /api/openapi.json``: generated from the route table, valid OpenAPI 3.1 (checked by
openapi-spec-validator), every served route in it and every route in it served; a route
without a documented response fails the check."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import OpenAPIV31SpecValidator

from runtime.config import ApiConfig, Config
from runtime.service.api.app import Route
from runtime.service.api.openapi import build_document, openapi_path, operation, problems
from runtime.service.api.routes import ROUTES
from tests.conftest import MakeRunner
from tests.service.api_server import Api
from tests.service.metrics_helpers import serve_api

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def handler(request: web.Request) -> web.Response:
    return web.Response()


async def fetch(api: Api, *, auth: bool = True) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(api.url + "/api/openapi.json", headers=api.headers if auth else {}) as resp,
    ):
        return resp.status, await resp.json()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> operation object of every operation in *document*."""
    return {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def test_every_route_of_the_table_is_documented() -> None:
    assert problems(ROUTES) == []


async def test_the_served_document_is_valid_and_matches_the_router(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_api(runner, {}) as served:
        status, document = await fetch(served.api)
        app = served.server.app
        assert app is not None
        served_routes = {
            (route.method, openapi_path(route.resource.canonical))
            for route in app.router.routes()
            if route.resource is not None
        }
    assert status == 200
    OpenAPIV31SpecValidator(document).validate()  # raises with the first problem
    documented = operations(document)
    assert set(documented) == served_routes
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Sluiceway"
    assert document["servers"] == [{"url": "/"}]
    for (method, path), op in documented.items():
        assert op["responses"], (method, path)
        assert op["operationId"], (method, path)
    names = [op["operationId"] for op in documented.values()]
    assert len(names) == len(set(names))


async def test_security_is_bearer_or_session_and_health_checks_are_public(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_api(runner, {}) as served:
        _, document = await fetch(served.api)
        status, body = await fetch(served.api, auth=False)
    assert status == 401  # the document needs the token too: the API's shape is not public
    assert body["error"]["code"] == "unauthorized"
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert (schemes["session"]["in"], schemes["session"]["name"]) == ("cookie", "sluiceway_session")
    assert document["security"] == [{"bearer": []}, {"session": []}]
    ops = operations(document)
    assert ops[("GET", "/healthz")]["security"] == []
    assert "401" not in ops[("GET", "/healthz")]["responses"]
    metrics = ops[("GET", "/metrics")]
    assert "security" not in metrics  # the document's: bearer or session
    assert metrics["responses"]["401"] == {"$ref": "#/components/responses/Error"}
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]


async def test_the_server_url_is_the_configured_public_url(make_runner: MakeRunner) -> None:
    async with make_runner() as runner:
        config = Config(db=runner.store.path, api=ApiConfig(public_url="https://etl.example/"))
        async with serve_api(runner, {}, config=config) as served:
            _, document = await fetch(served.api)
    assert document["servers"] == [{"url": "https://etl.example"}]


def test_an_undocumented_route_fails_the_check() -> None:
    bare = Route("GET", "/api/widgets/{widget}", handler, "widget", "one widget")
    found = problems([*ROUTES, bare])
    why = "its doc= has no responses (document every route)"
    assert found == [f"route 'widget' (GET /api/widgets/{{widget}}): {why}"]


def test_a_doc_naming_a_path_parameter_the_path_lacks_fails_the_check() -> None:
    param = {"name": "flow", "in": "path", "required": True, "schema": {"type": "string"}}
    doc = {"parameters": [param], "responses": {"200": {"description": "ok"}}}
    route = Route("GET", "/api/flows", handler, "flows", "flows", doc=doc)
    twice = Route("GET", "/api/flows", handler, "flows2", "flows", doc=doc)
    found = problems([route, twice])
    assert any("describes path parameter 'flow' the path lacks" in p for p in found), found
    assert any("a second route on the same path and method" in p for p in found), found


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/runs/{run_id}", "/runs/{run_id}"),
        ("/files/{name:.*}", "/files/{name}"),
        ("/a/{x:[0-9]{1,3}}/b/{y}", "/a/{x}/b/{y}"),
    ],
    ids=["plain", "regex", "regex-with-braces"],
)
def test_aiohttp_path_templates_become_openapi_paths(path: str, expected: str) -> None:
    assert openapi_path(path) == expected


def test_undeclared_path_parameters_are_added_and_the_doc_is_not_changed() -> None:
    doc: dict[str, Any] = {"responses": {"200": {"description": "ok"}}}
    route = Route("GET", "/runs/{run_id:[0-9]+}/logs", handler, "logs", "a run's logs", doc=doc)
    op = operation(route)
    assert op["parameters"] == [
        {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert set(op["responses"]) == {"200", "401", "default"}
    assert doc == {"responses": {"200": {"description": "ok"}}}  # a copy was extended
    document = build_document([route], version="1.2.3")
    OpenAPIV31SpecValidator(document).validate()
    assert list(document["paths"]) == ["/runs/{run_id}/logs"]
    assert document["info"]["version"] == "1.2.3"
