"""The OpenAPI 3.1 descriptions of the read routes (flows, runs, a run, its logs): their
query parameters and the JSON schemas of their answers, kept apart from the handlers."""

from __future__ import annotations

from typing import Any

from runtime.states import RunState, TaskState

RUN_STATES = [state.value for state in RunState]
TRIGGER_KINDS = [
    "schedule",
    "cron",
    "every",
    "manual",
    "api",
    "event",
    "file",
    "flow",
    "backfill",
    "retry",
]

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": ["string", "null"], "format": "date-time"}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}
NNUM = {"type": ["number", "null"]}


def obj(props: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """An object schema with *props*, all of them required unless told otherwise."""
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = sorted(props)
    return schema


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


ERROR = obj(
    {
        "error": obj(
            {"code": STR, "message": STR, "field": STR},
        )
        | {"required": ["code", "message"]}
    }
)


def errors(*statuses: int) -> dict[str, Any]:
    """The error answers *statuses*, each with the one error body."""
    what = {
        400: "a query parameter is wrong (error.field names it)",
        401: "no or a wrong bearer token (or session)",
        404: "no such flow or run",
    }
    return {
        str(status): {
            "description": what[status],
            "content": {"application/json": {"schema": ERROR}},
        }
        for status in statuses
    }


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


LAST_RUN = obj(
    {"id": INT, "state": {"enum": RUN_STATES}, "logical_date": STR, "started_at": TIME,
     "ended_at": TIME}
)  # fmt: skip
TRIGGER = obj(
    {
        "kind": STR,
        "text": {"type": "string", "description": "the trigger as written in code"},
        "words": {"type": "string", "description": "the trigger in words"},
    }
) | {"additionalProperties": True}
FLOW = obj(
    {
        "name": STR,
        "description": NSTR,
        "file": NSTR,
        "tasks": arr(STR),
        "params": {"type": "object", "description": "param names and their defaults"},
        "triggers": arr(TRIGGER),
        "schedule": {"type": "string", "description": "the triggers in words, '; '-joined"},
        "next_runs": arr({"type": "string", "format": "date-time"}),
        "tz": NSTR,
        "sla": NNUM,
        "max_active_runs": NINT,
        "max_concurrency": NINT,
        "paused": BOOL,
        "paused_at": TIME,
        "last_runs": arr(LAST_RUN) | {"description": "the newest 20 runs, newest first"},
        "runs": INT,
        "running": INT,
        "queued": INT,
        "sla_misses": {"type": "integer", "description": "sla.missed events in the last 24 h"},
    }
)
RUN = obj(
    {
        "id": INT,
        "flow": STR,
        "state": {"enum": RUN_STATES},
        "params": {"type": "object"},
        "trigger": {
            "type": "object",
            "description": "what queued it: kind (schedule, manual, api, event, file, flow, "
            "backfill, retry) and the kind's own fields",
            "properties": {"kind": STR},
            "required": ["kind"],
            "additionalProperties": True,
        },
        "logical_date": STR,
        "idempotency_key": NSTR,
        "retry_of": NINT,
        "created_at": STR,
        "started_at": TIME,
        "ended_at": TIME,
        "duration": NNUM,
        "error": NSTR,
        "wait_reason": NSTR,
        "cancel_requested": BOOL,
        "sla_missed": BOOL,
    }
)
TASK = obj(
    {
        "name": STR,
        "index": {"type": "integer", "description": "only on a mapped instance"},
        "state": {"enum": [state.value for state in TaskState]},
        "attempts": INT,
        "started_at": TIME,
        "ended_at": TIME,
        "duration": NNUM,
        "next_attempt_at": TIME,
        "error": NSTR,
        "error_type": NSTR,
        "traceback": NSTR,
        "reason": NSTR,
        "tries": arr(
            obj(
                {
                    "attempt": INT,
                    "state": STR,
                    "started_at": TIME,
                    "ended_at": TIME,
                    "worker": {
                        "type": ["string", "null"],
                        "description": "the Dask worker it ran on; null: in the service",
                    },
                }
            )
        ),
    },
    required=False,
)
ATTEMPT = obj(
    {
        "task": {"type": "string", "description": "label: load or load[3]"},
        "name": STR,
        "index": NINT,
        "attempt": INT,
        "state": STR,
        "started_at": TIME,
        "ended_at": TIME,
        "duration": NNUM,
        "error_type": NSTR,
        "error_message": NSTR,
        "traceback": NSTR,
        "interrupted": BOOL,
        "worker": {"type": ["string", "null"], "description": "the Dask worker; null: local"},
    }
)
ALERT = obj(
    {
        "id": INT,
        "event": STR,
        "kind": STR,
        "task": NSTR,
        "destination": STR,
        "state": {"enum": ["held", "pending", "delivered", "dead", "grouped"]},
        "tries": INT,
        "last_error": NSTR,
        "created_at": STR,
        "sent_at": TIME,
        "next_attempt_at": TIME,
        "digest": {"type": ["object", "null"]},
    }
)
WAIT = obj({"task": NSTR, "text": STR, "until": TIME})
EVENT = obj({"ts": STR, "kind": STR, "task": NSTR}) | {"additionalProperties": True}
RUN_DETAIL = {
    **RUN,
    "properties": {
        **RUN["properties"],
        "tasks": arr(TASK),
        "events": arr(EVENT),
        "checks": arr({"type": "object"}),
        "attempts": arr(ATTEMPT),
        "sla_events": arr(EVENT),
        "alerts": arr(ALERT),
        "waiting": arr(WAIT) | {"description": "why it waits, in words; empty when it does not"},
        "mapped": {
            "type": "object",
            "description": "per mapped task: its instances by state, and total",
            "additionalProperties": {"type": "object", "additionalProperties": INT},
        },
    },
    "required": [*RUN["required"], "tasks", "events", "checks", "attempts", "sla_events",
                 "alerts", "waiting", "mapped"],
}  # fmt: skip
LOG_LINE = obj(
    {"id": INT, "task": NSTR, "name": NSTR, "index": NINT, "attempt": NINT, "ts": STR,
     "level": STR, "message": STR}
)  # fmt: skip

FLOW_PARAM = path_param("flow", "a loaded flow's name", STR)
RUN_PARAM = path_param("run_id", "the run's id", {"type": "integer", "minimum": 1})

LIST_FLOWS = {
    "tags": ["flows"],
    "responses": {**ok("every loaded flow, by name", obj({"flows": arr(FLOW)})), **errors(401)},
}
GET_FLOW = {
    "tags": ["flows"],
    "parameters": [FLOW_PARAM],
    "responses": {**ok("the flow", FLOW), **errors(401, 404)},
}
LIST_RUNS = {
    "tags": ["runs"],
    "description": "Runs newest first, a page at a time: pass next_cursor back as cursor "
    "(keyset on the run id, so runs queued meanwhile never shift a page). List filters take "
    "repeated parameters or commas: state=failed,cancelled.",
    "parameters": [
        query_param("flow", "only runs of these flows", STR),
        query_param("state", f"only runs in these states: {', '.join(RUN_STATES)}", STR),
        query_param(
            "trigger",
            "only runs of these trigger kinds: " + ", ".join(TRIGGER_KINDS)
            + " (cron and every: the schedule runs of such a trigger)",
            STR,
        ),
        query_param("since", "date_field at or after (ISO date or date-time; UTC unless an "
                    "offset is given; to the second)", {"type": "string", "format": "date-time"}),
        query_param("until", "date_field before (exclusive)",
                    {"type": "string", "format": "date-time"}),
        query_param("date_field", "what since/until compare: when the run was queued "
                    "(created_at, the default) or its logical date",
                    {"enum": ["created_at", "logical_date"], "default": "created_at"}),
        query_param("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500,
                                           "default": 50}),
        query_param("cursor", "next_cursor of the previous page", STR),
    ],
    "responses": {
        **ok("a page of runs (the `sluiceway runs --json` shape)",
             obj({"runs": arr(RUN), "next_cursor": NSTR})),
        **errors(400, 401),
    },
}  # fmt: skip
GET_RUN = {
    "tags": ["runs"],
    "parameters": [RUN_PARAM],
    "responses": {**ok("the run in full (`sluiceway show --json` and more)", RUN_DETAIL),
                  **errors(400, 401, 404)},
}  # fmt: skip
RUN_LOGS = {
    "tags": ["runs", "logs"],
    "description": "A run's stored log lines, oldest first, a page at a time: pass "
    "next_cursor back as after. When next_cursor is null the page reached the newest line; "
    "poll again with after = the last line's id for new ones.",
    "parameters": [
        RUN_PARAM,
        query_param("task", "one task (with its instances) or instance: load, load[3]", STR),
        query_param("after", "only lines with an id above this", {"type": "integer",
                                                                  "minimum": 0, "default": 0}),
        query_param("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 5000,
                                           "default": 500}),
    ],
    "responses": {
        **ok("a page of log lines", obj({"lines": arr(LOG_LINE), "next_cursor": NSTR})),
        **errors(400, 401, 404),
    },
}  # fmt: skip
