"""The read side of the JSON API: ``GET /api/flows``, ``/api/flows/{flow}``, ``/api/runs``
(filtered, cursor-paged), ``/api/runs/{run_id}`` and ``/api/runs/{run_id}/logs``."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from aiohttp import web

from runtime.errors import ParamError, RunNotFoundError
from runtime.scheduling.overview import flow_overview
from runtime.service.api import browse_docs as docs
from runtime.service.api.app import CONTEXT, READER, Reader, Route
from runtime.service.api.errors import HttpError, json_response
from runtime.service.api.query import (
    check_known,
    decode_cursor,
    encode_cursor,
    integer,
    listed,
    moment,
    one,
    second_bound,
)
from runtime.store.browse import (
    MAX_BRANCHES,
    KindTerm,
    RunCounts,
    RunFilter,
    branch_count,
    flow_stats,
    page_of_runs,
)
from runtime.store.rundetail import log_page, parse_label, run_detail

SLA_WINDOW = timedelta(hours=24)  # a flow's sla_misses count this far back
RUN_QUERY = frozenset(
    {"flow", "state", "trigger", "since", "until", "date_field", "limit", "cursor"}
)
LOG_QUERY = frozenset({"task", "after", "limit"})
# cron() and every() runs are recorded with trigger kind "schedule" and their spec
SPEC_KINDS = {"cron": "cron(", "every": "every("}
MAX_RUN_ID = (1 << 63) - 1
# the run counts of each application's reader (its queries run one at a time, in its thread)
_COUNTS: WeakKeyDictionary[Reader, RunCounts] = WeakKeyDictionary()


# --- flows ---


async def flow_objects(request: web.Request, names: list[str]) -> list[dict[str, Any]]:
    """The flow objects of the loaded flows *names* (each must be loaded): the overview
    (:func:`~runtime.scheduling.overview.flow_overview`) with the store's part (paused, last
    runs, counts, SLA misses of the last 24 h). The home page builds on it too."""
    ctx = request.app[CONTEXT]
    flows = ctx.flows  # a reload during the read below replaces the mapping, not this one
    now = ctx.clock.now()
    since = second_bound(now - SLA_WINDOW)
    reader = request.app[READER]
    counts = _COUNTS.get(reader)
    if counts is None:
        counts = _COUNTS[reader] = RunCounts()
    stats = await reader(flow_stats, names, since, counts, time.monotonic())
    return [{**flow_overview(flows[name], now), **stats[name]} for name in names]


async def list_flows(request: web.Request) -> web.Response:
    """``GET /api/flows``: every loaded flow with its triggers in words, next runs, paused,
    its newest runs and counts, by name."""
    check_known(request, ())
    names = sorted(request.app[CONTEXT].flows)
    return json_response({"flows": await flow_objects(request, names)})


async def get_flow(request: web.Request) -> web.Response:
    """``GET /api/flows/{flow}``: one loaded flow, as in the list; 404 ``unknown_flow``."""
    check_known(request, ())
    ctx = request.app[CONTEXT]
    name = request.match_info["flow"]
    if name not in ctx.flows:
        known = ", ".join(sorted(ctx.flows)) or "none"
        raise HttpError(
            404, f"unknown flow {name!r} (loaded flows: {known})", code="unknown_flow", field="flow"
        )
    (flow,) = await flow_objects(request, [name])
    return json_response(flow)


# --- runs ---


def _run_filter(request: web.Request) -> RunFilter:
    """The filters of ``GET /api/runs``; 400 naming the parameter for a bad one."""
    kinds: list[KindTerm] = []
    asked = listed(request, "trigger", allowed=docs.TRIGGER_KINDS, most=len(docs.TRIGGER_KINDS))
    for kind in asked:
        if kind in SPEC_KINDS and "schedule" in asked:
            continue  # every schedule run is asked for already
        kinds.append(
            KindTerm("schedule", SPEC_KINDS[kind]) if kind in SPEC_KINDS else KindTerm(kind)
        )
    since, until = moment(request, "since"), moment(request, "until")
    if since is not None and until is not None and until <= since:
        raise HttpError(400, "until must be after since (until is exclusive)", field="until")
    field = one(request, "date_field") or "created_at"
    if field not in ("created_at", "logical_date"):
        raise HttpError(
            400, f"date_field must be created_at or logical_date, not {field!r}", field="date_field"
        )
    where = RunFilter(
        flows=listed(request, "flow", most=50),
        states=listed(request, "state", allowed=docs.RUN_STATES),
        kinds=tuple(kinds),
        since=None if since is None else second_bound(since),
        until=None if until is None else second_bound(until, up=True),
        date_field=field,
    )
    if branch_count(where) > MAX_BRANCHES:
        raise HttpError(
            400,
            f"too many combinations of flow and state (or trigger) values: "
            f"{branch_count(where)}, at most {MAX_BRANCHES}; ask for fewer flows",
            field="flow",
        )
    return where


async def list_runs(request: web.Request) -> web.Response:
    """``GET /api/runs``: a page of runs, newest first, with ``next_cursor`` (null on the
    last page); filters flow, state, trigger, since/until (date_field), limit, cursor."""
    check_known(request, RUN_QUERY)
    where = _run_filter(request)
    limit = integer(request, "limit", default=50, low=1, high=500)
    before = decode_cursor(request)
    runs, more = await request.app[READER](page_of_runs, where, limit, before)
    cursor = encode_cursor(runs[-1]["id"]) if more and runs else None
    return json_response({"runs": runs, "next_cursor": cursor})


def _run_id(request: web.Request) -> int:
    text = request.match_info["run_id"]
    if not text.isdigit() or not 1 <= int(text) <= MAX_RUN_ID:
        raise HttpError(400, f"run id must be a positive integer, not {text!r}", field="run_id")
    return int(text)


def _not_found(run_id: int) -> HttpError:
    return HttpError(404, f"no run {run_id}", code="run_not_found", field="run_id")


async def get_run(request: web.Request) -> web.Response:
    """``GET /api/runs/{run_id}``: the run in full; 404 ``run_not_found``."""
    check_known(request, ())
    run_id = _run_id(request)
    try:
        run = await request.app[READER](run_detail, run_id)
    except RunNotFoundError:
        raise _not_found(run_id) from None
    return json_response(run)


async def run_logs(request: web.Request) -> web.Response:
    """``GET /api/runs/{run_id}/logs``: a page of the run's log lines, oldest first, with
    ``next_cursor`` (the ``after`` of the next page; null when this page reached the end)."""
    check_known(request, LOG_QUERY)
    run_id = _run_id(request)
    task = one(request, "task")
    if task is not None:
        try:
            parse_label(task)
        except ParamError as exc:
            raise HttpError(400, str(exc), field="task") from None
    after = integer(request, "after", default=0, low=0, high=MAX_RUN_ID)
    limit = integer(request, "limit", default=500, low=1, high=5000)
    try:
        lines, more = await request.app[READER](log_page, run_id, task, after, limit)
    except RunNotFoundError:
        raise _not_found(run_id) from None
    cursor = str(lines[-1]["id"]) if more and lines else None
    return json_response({"lines": lines, "next_cursor": cursor})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/flows", list_flows, "list_flows", "every loaded flow", doc=docs.LIST_FLOWS),
    Route("GET", "/api/flows/{flow}", get_flow, "get_flow", "one loaded flow", doc=docs.GET_FLOW),
    Route("GET", "/api/runs", list_runs, "list_runs", "runs, filtered, a page at a time",
          doc=docs.LIST_RUNS),
    Route("GET", "/api/runs/{run_id}", get_run, "get_run", "one run in full",
          doc=docs.GET_RUN),
    Route("GET", "/api/runs/{run_id}/logs", run_logs, "run_logs", "a run's log lines, paged",
          doc=docs.RUN_LOGS),
)  # fmt: skip
