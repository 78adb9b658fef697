"""``POST /api/flows/{flow}/runs``: queue a run of one flow."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from runtime.errors import ParamError
from runtime.service.api.app import CONTEXT, READER, read_json
from runtime.service.api.errors import HttpError, json_response
from runtime.service.api.openapi import ERROR_RESPONSE
from runtime.store.incoming import queue_run, run_objects

log = logging.getLogger("sluiceway.runtime.api")

RUN_FIELDS = frozenset({"params", "idempotency_key"})
MAX_KEY = 256  # characters of an idempotency key


def check_key(value: Any, field: str) -> str | None:
    """An idempotency key as sent: ``None``, or a non-empty string of at most
    :data:`MAX_KEY` characters.

    :raises HttpError: 400 naming *field*
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_KEY:
        raise HttpError(
            400, f"{field} must be a non-empty string of at most {MAX_KEY} characters", field=field
        )
    return value


def _run_request(body: Any) -> tuple[dict[str, Any], str | None]:
    """(params, idempotency_key) of a run request body.

    :raises HttpError: 400 naming the field at fault
    """
    if not isinstance(body, dict):
        raise HttpError(
            400,
            'body must be a JSON object like {"params": {...}, "idempotency_key": "..."}',
            field="body",
        )
    unknown = sorted(body.keys() - RUN_FIELDS)
    if unknown:
        raise HttpError(
            400, f"unknown field {unknown[0]!r} (fields: idempotency_key, params)", field=unknown[0]
        )
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise HttpError(400, "params must be a JSON object of param names", field="params")
    return params, check_key(body.get("idempotency_key"), "idempotency_key")


async def create_run(request: web.Request) -> web.Response:
    """Queue a run of ``{flow}``: 201 with the run (the ``runs --json`` shape) once its row
    is committed; the same idempotency key again: 200 with that same run. A paused flow is
    queued too (it starts when unpaused), as ``sluiceway trigger`` does."""
    ctx = request.app[CONTEXT]
    name = request.match_info["flow"]
    params, key = _run_request(await read_json(request, empty={}))
    flow = ctx.flows.get(name)
    if flow is None:
        known = ", ".join(sorted(ctx.flows)) or "none"
        raise HttpError(
            404, f"unknown flow {name!r} (loaded flows: {known})", code="unknown_flow", field="flow"
        )
    undeclared = sorted(params.keys() - flow.params.keys())
    if undeclared:  # named here, so that the answer can point at the field
        known = ", ".join(sorted(flow.params)) or "none"
        raise HttpError(
            400,
            f"flow {name!r} has no param {undeclared[0]!r} (params: {known})",
            field=f"params.{undeclared[0]}",
        )
    try:
        resolved = flow.resolve_params(params)
    except ParamError as exc:
        raise HttpError(400, str(exc), field="params") from None
    trigger = {"kind": "api", "via": "http", "remote": request.remote}
    now = ctx.clock.now()
    log.debug("api: queueing a run of flow=%s key=%s", name, key)
    queued = await queue_run(ctx.store, flow, params=resolved, trigger=trigger, key=key, now=now)
    if queued.created:
        ctx.wake_queue()
        log.info("api: run=%s flow=%s queued key=%s", queued.run_id, name, key)
    (run,) = await run_objects(request.app[READER], [queued])
    return json_response(run, status=201 if queued.created else 200)


# --- OpenAPI (runtime.service.api.openapi) ---

_TEXT_OR_NULL = {"type": ["string", "null"]}
RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A run, as `sluiceway runs --json` shows it",
    "required": ["id", "flow", "state", "params", "trigger", "logical_date"],
    "properties": {
        "id": {"type": "integer"},
        "flow": {"type": "string"},
        "state": {"type": "string", "examples": ["queued", "running", "succeeded"]},
        "params": {"type": "object"},
        "trigger": {"type": "object", "description": "what started it; `kind` says which"},
        "logical_date": {"type": "string", "format": "date-time"},
        "idempotency_key": _TEXT_OR_NULL,
        "retry_of": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _TEXT_OR_NULL,
        "ended_at": _TEXT_OR_NULL,
        "duration": {"type": ["number", "null"], "description": "seconds"},
        "error": _TEXT_OR_NULL,
        "wait_reason": _TEXT_OR_NULL,
        "cancel_requested": {"type": "boolean"},
        "sla_missed": {"type": "boolean"},
    },
}
_ERROR = {"$ref": ERROR_RESPONSE}
CREATE_RUN_DOC: dict[str, Any] = {
    "tags": ["runs"],
    "description": (
        "Queue a run of the flow; 201 once its row is committed. The same idempotency key "
        "again answers 200 with that same run. A paused flow's run is queued too."
    ),
    "parameters": [
        {
            "name": "flow",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "a loaded flow",
        }
    ],
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "params": {
                            "type": ["object", "null"],
                            "description": "values of the flow's declared params",
                        },
                        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                }
            }
        },
    },
    "responses": {
        "201": {
            "description": "queued",
            "content": {"application/json": {"schema": RUN_SCHEMA}},
        },
        "200": {
            "description": "a run with this idempotency key existed: that run",
            "content": {"application/json": {"schema": RUN_SCHEMA}},
        },
        "400": _ERROR,
        "404": _ERROR,
        "413": _ERROR,
        "503": _ERROR,
    },
}
