"""What the page handlers share: reading query values with a 400 that names the field, the
OpenAPI description of an HTML page, and a run id from the path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from runtime.service.api.errors import HttpError

HTML = {"text/html": {"schema": {"type": "string"}}}
ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}  # runtime/service/api/openapi.py


def page_doc(
    description: str,
    *,
    path: Sequence[tuple[str, str]] = (),
    query: Sequence[tuple[str, dict[str, Any], str]] = (),
    errors: Sequence[int] = (400, 404),
) -> dict[str, Any]:
    """The OpenAPI operation of a page: *path* parameters (name, description), *query*
    parameters (name, schema, description), a ``text/html`` 200 and the *errors* (an HTML
    page for a browser, the JSON error body for other clients)."""
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}, "description": d}
        for n, d in path
    ]
    params += [
        {"name": n, "in": "query", "required": False, "schema": s, "description": d}
        for n, s, d in query
    ]
    error_content = {
        **HTML,
        "application/json": {"schema": ERROR_SCHEMA},
    }
    responses: dict[str, Any] = {"200": {"description": description, "content": HTML}}
    for status in errors:
        what = {400: "a bad query value", 404: "no such flow or run"}.get(status, "an error")
        responses[str(status)] = {"description": what, "content": error_content}
    return {"tags": ["dashboard"], "parameters": params, "responses": responses}


def query_int(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    """The query value *name* as an int in [low, high]; *default* when absent or empty.

    :raises HttpError: 400 naming the field and the range
    """
    text = request.query.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise HttpError(
            400,
            f"query value {name}={text[:40]!r}: expected a whole number from {low} to {high}",
            field=name,
        )
    return value


def query_text(request: web.Request, name: str, limit: int = 200) -> str | None:
    """The query value *name*, stripped; None when absent or empty.

    :raises HttpError: 400 when longer than *limit* characters
    """
    text = request.query.get(name, "").strip()
    if len(text) > limit:
        raise HttpError(400, f"query value {name}: longer than {limit} characters", field=name)
    return text or None


def run_id_of(request: web.Request) -> int:
    """The ``{run_id}`` of the path.

    :raises HttpError: 404 when it is not a run id
    """
    text = request.match_info["run_id"]
    if not text.isdigit() or len(text) > 18:
        raise HttpError(404, f"no run {text[:40]!r}: run ids are whole numbers", field="run_id")
    return int(text)
