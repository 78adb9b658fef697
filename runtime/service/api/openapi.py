"""The OpenAPI 3.1 document of the API, generated from the route table: each route's ``doc``
fragment, with its operationId, summary, security and path parameters filled in, and the
one error body as the component ``Error``."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.service.api.app import Route

VERSION = "3.1.0"
SESSION_COOKIE = "sluiceway_session"
# aiohttp's `{name}` or `{name:regex}`; OpenAPI knows only `{name}`
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one error body of every route",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {
                    "type": "string",
                    "description": "machine-readable: bad_request, unauthorized, not_found, ...",
                },
                "message": {"type": "string", "description": "what is wrong and where"},
                "field": {
                    "type": "string",
                    "description": "the request field at fault (params.region, body, flow)",
                },
            },
        }
    },
}
ERROR_RESPONSE = "#/components/responses/Error"


def error_response(description: str) -> dict[str, Any]:
    """A response object whose body is the :data:`ERROR_SCHEMA` (for a route's ``doc``)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def json_body(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    """A response object with a JSON body of *schema* (for a route's ``doc``)."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_path(path: str) -> str:
    """An aiohttp path template as OpenAPI writes it (``{name:.*}`` -> ``{name}``)."""
    return PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def path_params(path: str) -> list[str]:
    """The names of the path's ``{name}`` parameters, in order."""
    return [m.group(1) for m in PATH_PARAM.finditer(path)]


def problems(routes: Sequence[Route]) -> list[str]:
    """What keeps *routes* from being documented, one sentence each naming the route:
    no ``responses`` in its ``doc``, a path parameter its ``doc`` describes that the path
    lacks, a method OpenAPI has no field for, or two routes on one path and method."""
    found: list[str] = []
    seen: set[tuple[str, str]] = set()
    for route in routes:
        where = f"route {route.name!r} ({route.method} {route.path})"
        method, path = route.method.lower(), openapi_path(route.path)
        if method not in METHODS:
            found.append(f"{where}: method {route.method} cannot be described")
        if (path, method) in seen:
            found.append(f"{where}: a second route on the same path and method")
        seen.add((path, method))
        if not route.doc.get("responses"):
            found.append(f"{where}: its doc= has no responses (document every route)")
        declared = {p.get("name") for p in route.doc.get("parameters", []) if p.get("in") == "path"}
        found.extend(
            f"{where}: doc= describes path parameter {name!r} the path lacks"
            for name in sorted(declared - set(path_params(route.path)))
        )
    return found


def operation(route: Route) -> dict[str, Any]:
    """The route's operation object: its ``doc`` with the operationId, summary, security,
    undeclared path parameters, and a 401 and a default error response added."""
    op: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
    op.update(copy.deepcopy(dict(route.doc)))
    params: list[dict[str, Any]] = list(op.get("parameters", []))
    declared = {p.get("name") for p in params if p.get("in") == "path"}
    params.extend(
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_params(route.path)
        if name not in declared
    )
    if params:
        op["parameters"] = params
    responses = op.setdefault("responses", {})
    if route.public:
        op["security"] = []
    else:
        responses.setdefault("401", {"$ref": ERROR_RESPONSE})
    responses.setdefault("default", {"$ref": ERROR_RESPONSE})
    return op


def build_document(
    routes: Sequence[Route], *, version: str, server: str | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of *routes*.

    :param version: the API's version (the package's)
    :param server: the URL people reach the service at (``[api] public_url``); a relative
        ``/`` without it
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation(route)
    return {
        "openapi": VERSION,
        "info": {
            "title": "Sluiceway",
            "version": version,
            "description": (
                "The JSON API, dashboard and metrics of a Sluiceway service. Every route "
                "but the health checks needs the bearer token (Authorization: Bearer "
                "<token>) or a session cookie from POST /login; a POST with the session "
                "cookie also needs the X-CSRF-Token header. Every error is "
                '{"error": {"code", "message", "field"?}}.'
            ),
        },
        "servers": [{"url": (server.rstrip("/") or "/") if server else "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "[api] token (or SLUICEWAY_API_TOKEN)",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "set by POST /login; unsafe methods need X-CSRF-Token",
                },
            },
            "schemas": {"Error": ERROR_SCHEMA},
            "responses": {"Error": error_response("an error (the one error body)")},
        },
    }
