"""``POST /api/events/{name}``: send an event; every flow with ``on_event(name)`` gets a run."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from runtime.errors import UnknownEventError
from runtime.service.api.app import CONTEXT, READER, read_json
from runtime.service.api.errors import HttpError, json_response
from runtime.service.api.openapi import ERROR_RESPONSE
from runtime.service.api.runs import RUN_SCHEMA, check_key
from runtime.store.incoming import queue_event, run_objects

log = logging.getLogger("sluiceway.runtime.api")

KEY_PARAM = "idempotency_key"
KEY_HEADER = "Idempotency-Key"


def _event_key(request: web.Request) -> str | None:
    """The client's idempotency key: the query parameter or the header (the body is the
    payload, so it cannot carry one); both given must agree."""
    in_query = check_key(request.query.get(KEY_PARAM), KEY_PARAM)
    in_header = check_key(request.headers.get(KEY_HEADER), KEY_HEADER)
    if in_query is not None and in_header is not None and in_query != in_header:
        raise HttpError(
            400, f"?{KEY_PARAM}= and the {KEY_HEADER} header disagree; send one", field=KEY_PARAM
        )
    return in_query if in_query is not None else in_header


async def send_event(request: web.Request) -> web.Response:
    """Queue a run of every loaded flow listening to ``{name}``; the JSON body (any JSON
    value, ``{}`` when empty) is each run's ``run.trigger.payload``. 201 with
    ``{"event", "runs"}`` when a run was created, 200 when every run existed (same key);
    404 when no flow listens."""
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    key = _event_key(request)
    payload = await read_json(request, empty={})
    try:
        queued = await queue_event(
            ctx.store, ctx.flows, name, payload, key=key, now=ctx.clock.now()
        )
    except UnknownEventError as exc:
        raise HttpError(404, str(exc), code="unknown_event", field="name") from None
    created = [item for item in queued if item.created]
    if created:
        ctx.wake_queue()
        log.info(
            "api: event %s: run(s) %s queued key=%s",
            name,
            ",".join(f"{q.run_id}({q.flow})" for q in created),
            key,
        )
    runs = await run_objects(request.app[READER], queued)
    return json_response({"event": name, "runs": runs}, status=201 if created else 200)


# --- OpenAPI (runtime.service.api.openapi) ---

_ERROR = {"$ref": ERROR_RESPONSE}
_QUEUED = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["event", "runs"],
                "properties": {
                    "event": {"type": "string"},
                    "runs": {"type": "array", "items": RUN_SCHEMA},
                },
            }
        }
    }
}
SEND_EVENT_DOC: dict[str, Any] = {
    "tags": ["runs"],
    "description": (
        "Queue a run of every loaded flow with on_event(name); the JSON body (any JSON "
        "value, {} when empty) is each run's run.trigger.payload."
    ),
    "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
        {
            "name": KEY_PARAM,
            "in": "query",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 256},
        },
        {
            "name": KEY_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 256},
        },
    ],
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"description": "any JSON value"}}},
    },
    "responses": {
        "201": {"description": "runs queued", **_QUEUED},
        "200": {"description": "every run existed (same idempotency key)", **_QUEUED},
        "400": _ERROR,
        "404": _ERROR,
        "413": _ERROR,
        "503": _ERROR,
    },
}
