"""The dashboard's page routes (``page=True``: a browser without a session is sent to the
login form; errors come back as an HTML page)."""

from __future__ import annotations

from runtime.service.api.app import Route
from runtime.service.web.flowpage import DEFAULT_ROWS, MAX_ROWS, flow_page
from runtime.service.web.home import home_page
from runtime.service.web.listpages import (
    LOG_PAGE,
    RUN_STATES,
    logs_page,
    run_logs_page,
    runs_page,
)
from runtime.service.web.runpage import run_page
from runtime.service.web.views import page_doc

_ID = {"type": "integer", "minimum": 1}
_TEXT = {"type": "string", "maxLength": 200}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/",
        home_page,
        "page_home",
        "dashboard: every flow, its last 20 runs, failures and SLA misses",
        page=True,
        doc=page_doc("the home page", errors=()),
    ),
    Route(
        "GET",
        "/flows/{flow}",
        flow_page,
        "page_flow",
        "dashboard: a flow's grid of runs x tasks, its trigger form and schedule",
        page=True,
        doc=page_doc(
            "the flow page",
            path=[("flow", "the flow's name")],
            query=[
                (
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": DEFAULT_ROWS},
                    "runs per page",
                ),
                ("before", _ID, "cursor: runs with a smaller id (the next page's link)"),
            ],
        ),
    ),
    Route(
        "GET",
        "/runs",
        runs_page,
        "page_runs",
        "dashboard: the run list, filtered by flow and state",
        page=True,
        doc=page_doc(
            "the run list",
            query=[
                ("flow", _TEXT, "only runs of this flow"),
                ("state", {"type": "string", "enum": list(RUN_STATES)}, "only runs in this state"),
                ("before", _ID, "cursor: runs with a smaller id (the next page's link)"),
                ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "runs per page"),
            ],
            errors=(400,),
        ),
    ),
    Route(
        "GET",
        "/runs/{run_id}",
        run_page,
        "page_run",
        "dashboard: one run, its DAG, Gantt timeline, checks, alerts and log tail",
        page=True,
        doc=page_doc("the run page", path=[("run_id", "the run's id")], errors=(404,)),
    ),
    Route(
        "GET",
        "/runs/{run_id}/logs",
        run_logs_page,
        "page_run_logs",
        "dashboard: a run's full logs, a page at a time",
        page=True,
        doc=page_doc(
            "a run's logs",
            path=[("run_id", "the run's id")],
            query=[
                ("task", _TEXT, "only this task (load) or instance (load[3])"),
                (
                    "after",
                    {"type": "integer", "minimum": 0},
                    f"cursor: lines after this id ({LOG_PAGE} a page)",
                ),
            ],
        ),
    ),
    Route(
        "GET",
        "/logs",
        logs_page,
        "page_logs",
        "dashboard: search the log lines of every run",
        page=True,
        doc=page_doc(
            "the log search page",
            query=[("q", _TEXT, "text the line contains"), ("flow", _TEXT, "only this flow")],
            errors=(400,),
        ),
    ),
)
