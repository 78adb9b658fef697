"""The OpenAPI operation objects of the actions (:mod:`runtime.service.api.actions`)."""

from __future__ import annotations

from typing import Any

from runtime.service.api.logsearch import ERROR

RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
FLOW = {"name": "flow", "in": "path", "required": True, "schema": {"type": "string"}}

# one element of `sluiceway runs --json` (the README's run object)
RUN: dict[str, Any] = {
    "type": "object",
    "required": ["id", "flow", "state", "params", "trigger", "logical_date", "retry_of"],
    "properties": {
        "id": {"type": "integer"},
        "flow": {"type": "string"},
        "state": {"type": "string"},
        "params": {"type": "object"},
        "trigger": {"type": "object"},
        "logical_date": {"type": "string", "format": "date-time"},
        "idempotency_key": {"type": ["string", "null"]},
        "retry_of": {"type": ["integer", "null"]},
        "created_at": {"type": ["string", "null"]},
        "started_at": {"type": ["string", "null"]},
        "ended_at": {"type": ["string", "null"]},
        "duration": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "wait_reason": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"},
        "sla_missed": {"type": "boolean"},
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    what = {
        400: "a bad body or parameter (named in field)",
        404: "no such run or flow",
        409: "the run cannot be retried now (not ended, succeeded, or being retried)",
        503: "the history cannot be written right now; nothing changed",
    }
    return {str(status): _json(what[status], ERROR) for status in statuses}


EMPTY_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
}

CANCEL_DOC: dict[str, Any] = {
    "tags": ["actions"],
    "description": (
        "A queued run is cancelled at once (outcome `cancelled`); a running one is cancelled "
        "by the service within moments (`requested`: its tasks are cancelled, all_done tasks "
        "still run); an ended run is left alone (`ended`)."
    ),
    "parameters": [RUN_ID],
    "requestBody": EMPTY_BODY,
    "responses": {
        "200": _json(
            "what was done",
            {
                "type": "object",
                "required": ["run_id", "outcome", "state"],
                "properties": {
                    "run_id": {"type": "integer"},
                    "outcome": {"type": "string", "enum": ["cancelled", "requested", "ended"]},
                    "state": {"type": "string", "description": "the run's state now"},
                },
            },
        ),
        **_errors(400, 404, 503),
    },
}

RETRY_DOC: dict[str, Any] = {
    "tags": ["actions"],
    "description": (
        "Queues a new run (`retry_of` set) that reruns the failed, upstream_failed and "
        "cancelled tasks of an ended run and reuses the stored results of the others; the "
        "service executes it. 409 while the run has not ended, when it succeeded, or while "
        "a retry of it is queued or running. The same idempotency_key again answers 200 with "
        "the same retry."
    ),
    "parameters": [RUN_ID],
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"idempotency_key": {"type": "string", "maxLength": 256}},
                }
            }
        },
    },
    "responses": {
        "201": _json("the retry, queued", RUN),
        "200": _json("the retry this idempotency_key made before", RUN),
        **_errors(400, 404, 409, 503),
    },
}


def _pause_doc(paused: bool) -> dict[str, Any]:
    what = (
        "A paused flow creates no scheduled runs (its cursors stay) and its queued runs wait."
        if paused
        else "Its queued runs may start, and its missed instants follow its catch-up policy "
        "at once (never a flood: catchup and max_catchup decide)."
    )
    return {
        "tags": ["actions"],
        "description": what + " Persisted; `changed` is false when it already was so.",
        "parameters": [FLOW],
        "requestBody": EMPTY_BODY,
        "responses": {
            "200": _json(
                "the flow's state",
                {
                    "type": "object",
                    "required": ["flow", "paused", "changed"],
                    "properties": {
                        "flow": {"type": "string"},
                        "paused": {"type": "boolean"},
                        "changed": {"type": "boolean"},
                    },
                },
            ),
            **_errors(400, 404, 503),
        },
    }


PAUSE_DOC = _pause_doc(True)
UNPAUSE_DOC = _pause_doc(False)

PLANNED = {
    "type": "object",
    "required": ["logical_date", "action", "schedule", "run"],
    "properties": {
        "logical_date": {"type": "string", "format": "date-time"},
        "action": {"type": "string", "enum": ["run", "skip", "retry", "rerun"]},
        "schedule": {"type": "string", "description": "the trigger whose instant it is"},
        "run": {
            "type": ["object", "null"],
            "description": "the instant's newest run ({id, state}), if it has one",
        },
    },
}

BACKFILL_DOC: dict[str, Any] = {
    "tags": ["actions"],
    "description": (
        "A run for every scheduled instant (cron or every triggers) from start to end "
        "inclusive (a date means the whole day in the flow's zone), like `sluiceway backfill`. "
        "Instants that have a run are skipped, unless rerun says otherwise (`failed`: retry "
        "those whose newest run failed or was cancelled; `all`: also rerun succeeded ones). "
        "New instants carry the scheduler's idempotency key: sent twice, or racing the "
        "scheduler, no instant gets a second run. The service executes the runs under the "
        "flow's max_active_runs. dry_run: 200 with what would be done, nothing written."
    ),
    "parameters": [FLOW],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["start", "end"],
                    "properties": {
                        "start": {"type": "string", "examples": ["2026-11-01"]},
                        "end": {"type": "string", "examples": ["2026-11-07T23:00"]},
                        "dry_run": {"type": "boolean", "default": False},
                        "rerun": {"type": "string", "enum": ["none", "failed", "all"]},
                    },
                }
            }
        },
    },
    "responses": {
        "200": _json(
            "dry run: what would be done; or nothing new was queued",
            {
                "type": "object",
                "required": ["flow", "runs"],
                "properties": {
                    "flow": {"type": "string"},
                    "runs": {"type": "array", "items": {"oneOf": [PLANNED, RUN]}},
                    "skipped": {"type": "integer"},
                },
            },
        ),
        "201": _json(
            "the queued runs (each with its action)",
            {
                "type": "object",
                "required": ["flow", "runs", "skipped"],
                "properties": {
                    "flow": {"type": "string"},
                    "runs": {"type": "array", "items": RUN},
                    "skipped": {"type": "integer", "description": "instants left alone"},
                },
            },
        ),
        **_errors(400, 404, 503),
    },
}
