"""``GET /``: every flow with its state, schedule in words, next run and its last 20 runs as
coloured squares; failures and SLA misses of the last day at the top."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from runtime.scheduling.overview import flow_overview
from runtime.service.api.app import CONTEXT, READER
from runtime.service.web.render import render
from runtime.store import dashboard
from runtime.store.cursors import paused_flows

SQUARES = 20  # runs per flow on the home page
ATTENTION = timedelta(hours=24)  # how far back failures and SLA misses are shown


def home_data(conn: sqlite3.Connection, names: Sequence[str], since: datetime) -> dict[str, Any]:
    """Everything the home page reads, in one visit to the reader's thread."""
    return {
        "recent": dashboard.recent_runs(conn, names, SQUARES),
        "active": dashboard.active_counts(conn),
        "paused": paused_flows(conn),
        "failures": dashboard.recent_failures(conn, since),
        "sla": dashboard.recent_sla_misses(conn, since),
    }


def attention(data: dict[str, Any]) -> list[dict[str, Any]]:
    """What needs a look, newest first: runs that failed in the last day, and each flow's
    latest run when it failed (however long ago), once each."""
    seen: dict[int, dict[str, Any]] = {}
    for run in data["failures"]:
        seen[run["id"]] = {**run, "why": "failed in the last 24 h"}
    for flow, runs in data["recent"].items():
        if runs and runs[0]["state"] == "failed" and runs[0]["id"] not in seen:
            seen[runs[0]["id"]] = {**runs[0], "flow": flow, "why": "latest run failed"}
    return sorted(seen.values(), key=lambda run: run["id"], reverse=True)


def flow_rows(request: web.Request, data: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """One row per loaded flow, by name."""
    flows = request.app[CONTEXT].flows
    rows = []
    for name in sorted(flows):
        overview = flow_overview(flows[name], now, upcoming=1)
        recent = data["recent"].get(name, [])
        rows.append(
            {
                "name": name,
                "description": overview["description"],
                "schedule": overview["schedule"],
                "next_run": overview["next_runs"][0] if overview["next_runs"] else None,
                "paused": name in data["paused"],
                "last": recent[0] if recent else None,
                "squares": list(reversed(recent)),  # oldest left, newest right
                "active": data["active"].get(name, {}),
                "sla": overview["sla"],
            }
        )
    return rows


async def home_page(request: web.Request) -> web.Response:
    """The dashboard's home page."""
    ctx = request.app[CONTEXT]
    now = ctx.clock.now()
    data = await request.app[READER](home_data, sorted(ctx.flows), now - ATTENTION)
    return render(
        request,
        "home.html",
        {
            "flows": flow_rows(request, data, now),
            "attention": attention(data),
            "sla_misses": data["sla"],
            "now": now,
        },
    )
