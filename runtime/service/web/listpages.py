"""``GET /runs`` (the run list, filtered by flow and state, a page at a time), ``GET /logs``
(log search) and ``GET /runs/{run_id}/logs`` (a run's full logs, a page at a time)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from runtime.service.api.app import CONTEXT, READER
from runtime.service.api.errors import HttpError
from runtime.service.web.render import render
from runtime.service.web.views import query_int, query_text, run_id_of
from runtime.store import browse, dashboard, queries
from runtime.store.logsearch import LogSearch, SearchError, fts_query, search_logs, snippet_pieces

RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
PAGE = 50  # runs per page of the run list
HITS = 100  # log search results
LOG_PAGE = 500  # lines per page of a run's logs
_TASK = re.compile(r"(?P<name>[^\[\]]+)(?:\[(?P<idx>\d+)\])?")


async def runs_page(request: web.Request) -> web.Response:
    """The run list, newest first."""
    flow = query_text(request, "flow")
    state = query_text(request, "state")
    if state is not None and state not in RUN_STATES:
        raise HttpError(
            400,
            f"query value state={state!r}: expected one of {', '.join(RUN_STATES)}",
            field="state",
        )
    before = query_int(request, "before", None, 1, 1 << 62)
    limit = query_int(request, "limit", PAGE, 1, 200) or PAGE
    where = browse.RunFilter(flows=(flow,) if flow else (), states=(state,) if state else ())
    runs, more = await request.app[READER](browse.page_of_runs, where, limit, before)
    older = runs[-1]["id"] if more and runs else None
    return render(
        request,
        "runs.html",
        {
            "runs": runs,
            "older": older,
            "flow": flow,
            "state_filter": state,
            "before": before,
            "flows": sorted(request.app[CONTEXT].flows),
            "states": RUN_STATES,
        },
    )


async def logs_page(request: web.Request) -> web.Response:
    """Log search across runs (the full-text index of ``GET /api/logs/search``): ``q``
    (words, "phrases", prefix*), optionally one ``flow``; ``before`` pages back."""
    query = query_text(request, "q")
    flow = query_text(request, "flow")
    before = query_int(request, "before", None, 1, 1 << 62)
    found: dict[str, Any] = {"hits": [], "next_cursor": None}
    if query is not None:
        try:
            search = LogSearch(fts_query(query), limit=HITS, before=before, flow=flow)
            found = await request.app[READER](search_logs, search)
        except SearchError as exc:
            raise HttpError(400, str(exc), field=exc.field) from None
        for hit in found["hits"]:
            hit["pieces"] = snippet_pieces(hit["snippet"])
    return render(
        request,
        "logs.html",
        {
            "q": query or "",
            "flow": flow,
            "hits": found["hits"],
            "older": found["next_cursor"],
            "before": before,
            "limit": HITS,
            "flows": sorted(request.app[CONTEXT].flows),
        },
    )


async def run_logs_page(request: web.Request) -> web.Response:
    """A run's logs in full, ``LOG_PAGE`` lines a page; ``task=load`` or ``load[3]``."""
    run_id = run_id_of(request)
    task = query_text(request, "task")
    name: str | None = None
    idx: int | None = None
    if task is not None:
        match = _TASK.fullmatch(task)
        if match is None:
            raise HttpError(
                400, f"query value task={task!r}: expected NAME or NAME[INDEX]", field="task"
            )
        name = match["name"]
        idx = int(match["idx"]) if match["idx"] is not None else None
    after = query_int(request, "after", 0, 0, 1 << 62)
    data = await request.app[READER](_run_logs, run_id, name, idx, after or 0)
    if data is None:
        raise HttpError(404, f"no run {run_id}", field="run_id")
    return render(
        request, "run_logs.html", {**data, "run_id": run_id, "task": task, "after": after}
    )


def _run_logs(conn: Any, run_id: int, name: str | None, idx: int | None, after: int) -> Any:
    """The run's row (the newest run with an id up to *run_id*: itself, if it exists) and
    one page of its lines; None when there is no such run."""
    runs = queries.runs_by_id(conn, [run_id])
    if not runs:
        return None
    lines, more = dashboard.log_page(conn, run_id, name=name, idx=idx, after=after, limit=LOG_PAGE)
    return {"run": runs[0], "lines": lines, "more": more}
