"""The API's one error body, ``{"error": {"code", "message", "field"?}}``, and the exception
handlers raise to answer with it."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

# the code of each status the API answers with an error (by default)
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}


def json_response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """*value* as an ``application/json`` response (orjson)."""
    return web.Response(
        body=orjson.dumps(value),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "field"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


class HttpError(Exception):
    """Raised by a handler to answer with the error body; the errors middleware turns it
    into the response.

    :param status: the HTTP status
    :param message: what is wrong and where, for a person
    :param field: the request field at fault (``params.region``, ``idempotency_key``, ``body``)
    :param code: machine-readable; by default from the status (:data:`CODES`)
    :param headers: added to the response (``Allow``, ``WWW-Authenticate``)
    :param close: close the connection after the answer
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
        self.headers = dict(headers or {})
        self.close = close

    def response(self) -> web.Response:
        body = error_body(self.code, self.message, self.field)
        response = json_response(body, status=self.status, headers=self.headers)
        if self.close:  # e.g. after a body left unread: the connection cannot be reused
            response.force_close()
        return response
