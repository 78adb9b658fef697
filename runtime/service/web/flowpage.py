"""``GET /flows/{flow}``: a flow's grid (runs x tasks, coloured by state), its trigger form
built from its params, pause/unpause, and its schedule in words, next runs and SLA."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from runtime.scheduling.overview import flow_overview
from runtime.service.api.app import CONTEXT, READER
from runtime.service.api.errors import HttpError
from runtime.service.web.grid import build_grid
from runtime.service.web.render import render
from runtime.service.web.views import query_int
from runtime.store import dashboard
from runtime.store.cursors import paused_flows

DEFAULT_ROWS = 25
MAX_ROWS = 100


def grid_data(
    conn: sqlite3.Connection, flow: str, limit: int, before: int | None
) -> dict[str, Any]:
    """The grid's runs and folded task rows, and whether the flow is paused: one visit."""
    runs, older = dashboard.grid_runs(conn, flow, limit, before)
    return {
        "runs": runs,
        "older": older,
        "cells": dashboard.grid_cells(conn, [run["id"] for run in runs]),
        "paused": flow in paused_flows(conn),
        "active": dashboard.active_counts(conn).get(flow, {}),
    }


def param_fields(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trigger form's inputs, one per param, typed by its default: ``bool`` (a
    checkbox), ``int``, ``float``, ``str``, else ``json`` (the default as JSON text)."""
    fields = []
    for name, default in params.items():
        if isinstance(default, bool):
            kind, value = "bool", ""
        elif isinstance(default, int):
            kind, value = "int", str(default)
        elif isinstance(default, float):
            kind, value = "float", repr(default)
        elif isinstance(default, str):
            kind, value = "str", default
        else:
            kind, value = "json", _json_text(default)
        fields.append({"name": name, "type": kind, "value": value, "checked": default is True})
    return fields


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a tagged value (a date, a Decimal): its text
        return orjson.dumps(str(value)).decode()


async def flow_page(request: web.Request) -> web.Response:
    """One flow: header, trigger form, grid."""
    ctx = request.app[CONTEXT]
    name = request.match_info["flow"]
    flow = ctx.flows.get(name)
    if flow is None:
        known = ", ".join(sorted(ctx.flows)) or "none"
        raise HttpError(404, f"no flow {name!r} is loaded (loaded flows: {known})", field="flow")
    limit = query_int(request, "limit", DEFAULT_ROWS, 1, MAX_ROWS)
    assert limit is not None
    before = query_int(request, "before", None, 1, 1 << 62)
    data = await request.app[READER](grid_data, name, limit, before)
    overview = flow_overview(flow, ctx.clock.now(), upcoming=5)
    columns, rows = build_grid(flow.graph.order, data["runs"], data["cells"])
    mapped = {task.name for task in flow.tasks.values() if task.map is not None}
    return render(
        request,
        "flow.html",
        {
            "flow": overview,
            "paused": data["paused"],
            "active": data["active"],
            "fields": param_fields(overview["params"]),
            "columns": columns,
            "mapped": mapped,
            "rows": rows,
            "limit": limit,
            "before": before,
            "older": data["older"],
        },
    )
