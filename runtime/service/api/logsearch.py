"""``GET /api/logs/search``: full-text search across the log lines of every run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from runtime import codec
from runtime.service.api.app import READER, Route
from runtime.service.api.errors import HttpError, json_response
from runtime.store.logsearch import (
    MARK_END,
    MARK_START,
    LogSearch,
    SearchError,
    fts_query,
    min_level,
    search_logs,
)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_Q = 1000  # characters
PARAMS = frozenset({"q", "flow", "run", "task", "level", "since", "until", "limit", "cursor"})


def _int(query: Any, name: str, *, low: int, high: int | None = None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} {text!r}: expected a whole number", field=name) from None
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise HttpError(400, f"{name} {value}: must be {span}", field=name)
    return value


def _instant(query: Any, name: str) -> str | None:
    """An ISO 8601 date or date-time (UTC when it names no offset), as stored (``...Z``)."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        # an unencoded "+01:00" arrives as " 01:00" (a + in a query string is a space)
        moment = datetime.fromisoformat(text.replace(" ", "+") if "T" in text else text)
    except ValueError:
        raise HttpError(
            400, f"{name} {text!r}: expected ISO 8601, like 2026-11-30T08:00:00Z", field=name
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return codec.iso(moment)


def parse_search(query: Any) -> LogSearch:
    """The search the query string asks for.

    :raises HttpError: 400 naming the parameter at fault
    """
    unknown = sorted(set(query.keys()) - PARAMS)
    if unknown:
        known = ", ".join(sorted(PARAMS))
        raise HttpError(400, f"unknown parameter {unknown[0]!r} (known: {known})", field=unknown[0])
    text = query.get("q", "")
    if not text.strip():
        raise HttpError(400, "q is required: the words to search for", field="q")
    if len(text) > MAX_Q:
        raise HttpError(400, f"q is longer than {MAX_Q} characters", field="q")
    try:
        match = fts_query(text)
        levels = min_level(query["level"]) if query.get("level") else ()
    except SearchError as exc:
        raise HttpError(400, str(exc), field=exc.field) from None
    limit = _int(query, "limit", low=1, high=MAX_LIMIT)
    since, until = _instant(query, "since"), _instant(query, "until")
    return LogSearch(
        match=match,
        limit=DEFAULT_LIMIT if limit is None else limit,
        before=_int(query, "cursor", low=1),
        flow=query.get("flow") or None,
        run=_int(query, "run", low=1),
        task=query.get("task") or None,
        levels=levels,
        since=since,
        until=until,
    )


async def search(request: web.Request) -> web.Response:
    """``GET /api/logs/search?q=...``: the newest matching lines, ``{"hits", "next_cursor"}``."""
    wanted = parse_search(request.query)
    try:
        found = await request.app[READER](search_logs, wanted)
    except SearchError as exc:
        raise HttpError(400, str(exc), field=exc.field) from None
    return json_response(found)


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": name == "q",
        "description": description,
        "schema": schema,
    }


HIT = {
    "type": "object",
    "required": ["id", "run_id", "flow", "task", "ts", "level", "message", "snippet"],
    "properties": {
        "id": {"type": "integer", "description": "the line's id (newest first)"},
        "run_id": {"type": "integer"},
        "flow": {"type": "string"},
        "task": {"type": ["string", "null"], "description": "label: load or load[3]"},
        "ts": {"type": "string", "format": "date-time"},
        "level": {"type": "string"},
        "message": {"type": "string"},
        "snippet": {
            "type": "string",
            "description": f"the message around the matches, each match between "
            f"U+{ord(MARK_START):04X} and U+{ord(MARK_END):04X} (escape the text, then turn "
            "them into <mark> and </mark>); cut parts are marked with U+2026",
        },
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}

DOC: dict[str, Any] = {
    "tags": ["logs"],
    "description": (
        "Full-text search (SQLite FTS5) over every stored log line, newest first. `q` is "
        'plain words (all must match), "quoted phrases" and prefix* words; nothing in it is '
        "FTS5 syntax. Keyset pagination: pass `next_cursor` as `cursor`. A search spends at "
        "most about 100 ms: a rare filter over a common word may answer with fewer than "
        "`limit` hits and a `next_cursor` to go on from; `next_cursor` null means no more."
    ),
    "parameters": [
        _query("q", "words to search for", {"type": "string", "maxLength": MAX_Q}),
        _query("flow", "only lines of this flow's runs", {"type": "string"}),
        _query("run", "only this run's lines", {"type": "integer", "minimum": 1}),
        _query(
            "task",
            "only this task: load (with its mapped instances) or load[3]",
            {"type": "string"},
        ),
        _query(
            "level",
            "this level and above",
            {"type": "string", "enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]},
        ),
        _query("since", "lines at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
        _query("until", "lines before (ISO 8601)", {"type": "string", "format": "date-time"}),
        _query(
            "limit",
            f"most hits (default {DEFAULT_LIMIT})",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        ),
        _query("cursor", "next_cursor of the previous page", {"type": "string"}),
    ],
    "responses": {
        "200": {
            "description": "the hits, newest first",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["hits", "next_cursor"],
                        "properties": {
                            "hits": {"type": "array", "items": HIT},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    }
                }
            },
        },
        "400": {
            "description": "a bad parameter (named in field)",
            "content": {"application/json": {"schema": ERROR}},
        },
    },
}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/api/logs/search", search, "search_logs", "full-text search of log lines", doc=DOC
    ),
)
