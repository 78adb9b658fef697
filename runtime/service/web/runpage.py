"""``GET /runs/{run_id}``: one run: header (flow, state, dates, trigger, params), its DAG
coloured by state, a Gantt timeline of its attempts, checks, SLA misses, alerts sent,
errors with tracebacks, the log tail, and the retry / cancel buttons."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from runtime.errors import RunNotFoundError
from runtime.service.api.app import CONTEXT, READER
from runtime.service.api.errors import HttpError
from runtime.service.web.dag import layout_dag
from runtime.service.web.format import between
from runtime.service.web.gantt import layout_gantt
from runtime.service.web.grid import DONE, RELEVANCE, most_relevant
from runtime.service.web.render import render
from runtime.service.web.views import run_id_of
from runtime.store import dashboard, queries

TAIL = 200  # log lines on the run page; the rest on /runs/{id}/logs
FAILED = frozenset({"failed", "upstream_failed"})
INSTANCES = 100  # rows per mapped task in the task table; the rest are counted
ERRORS = 50  # errors with tracebacks shown; the rest are counted


def run_data(conn: sqlite3.Connection, run_id: int) -> dict[str, Any]:
    """The run with its tasks, events and checks, its attempts, alerts and log tail.

    :raises RunNotFoundError: when there is no such run
    """
    run = queries.get_run(conn, run_id)
    return {
        "run": run,
        "attempts": queries.get_attempts(conn, run_id),
        "alerts": dashboard.run_alerts(conn, run_id),
        "logs": dashboard.log_tail(conn, run_id, TAIL),
    }


def dag_nodes(
    order: Sequence[str], tasks: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per task name: its state (a mapped task's own, else the most relevant of its
    instances while it has none), attempts, and instances (total, done)."""
    own: dict[str, Mapping[str, Any]] = {}
    instances: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        if "index" in task:
            instances.setdefault(task["name"], []).append(task)
        else:
            own[task["name"]] = task
    out = {}
    for name in dict.fromkeys([*order, *own, *instances]):
        items = instances.get(name, [])
        mine = own.get(name)
        state = mine["state"] if mine else "pending"
        if items and state not in DONE:
            state = most_relevant(i["state"] for i in items)
        out[name] = {
            "state": state,
            "attempts": mine["attempts"] if mine else 0,
            "mapped": bool(items),
            "total": len(items),
            "done": sum(1 for i in items if i["state"] in DONE),
        }
    return out


def visible_tasks(
    tasks: Sequence[Mapping[str, Any]], per_task: int = INSTANCES
) -> tuple[list[Mapping[str, Any]], dict[str, int]]:
    """The task table's rows: every task's own row and at most *per_task* instances of
    each mapped task, the most relevant first (failures before successes), in index order
    among those kept; and per mapped task how many instances were left out."""
    rank = {state: i for i, state in enumerate(RELEVANCE)}
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        if "index" in task:
            by_task.setdefault(task["name"], []).append(task)
    kept: set[int] = set()
    hidden: dict[str, int] = {}
    for name, items in by_task.items():
        chosen = sorted(items, key=lambda t: (rank.get(t["state"], len(rank)), t["index"]))
        kept.update(id(t) for t in chosen[:per_task])
        if len(items) > per_task:
            hidden[name] = len(items) - per_task
    rows = [t for t in tasks if "index" not in t or id(t) in kept]
    return rows, hidden


def trigger_view(trigger: Any) -> dict[str, Any]:
    """The trigger record as the header shows it: its kind, and the rest of its fields
    (a file's path, an event's payload, the upstream run) as given."""
    if not isinstance(trigger, dict):
        return {"kind": "manual", "fields": {}}
    fields = {k: v for k, v in trigger.items() if k != "kind"}
    return {"kind": str(trigger.get("kind", "manual")), "fields": fields}


def _graph(request: web.Request, run: Mapping[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    """The run's flow's task order and edges when it is loaded; else only the run's tasks,
    without edges (the dependencies of a flow that is gone are not stored)."""
    flow = request.app[CONTEXT].flows.get(run["flow"])
    if flow is None:
        return list(dict.fromkeys(t["name"] for t in run["tasks"])), None
    return list(flow.graph.order), dict(flow.graph.upstream)


async def run_page(request: web.Request) -> web.Response:
    """One run."""
    run_id = run_id_of(request)
    try:
        data = await request.app[READER](run_data, run_id)
    except RunNotFoundError:
        raise HttpError(404, f"no run {run_id}", field="run_id") from None
    run = data["run"]
    now = request.app[CONTEXT].clock.now()
    order, upstream = _graph(request, run)
    nodes = dag_nodes(order, run["tasks"])
    order = list(nodes)
    edges = upstream or {}
    dag = layout_dag(order, {n: [u for u in edges.get(n, ()) if u in nodes] for n in order})
    rows = [(_label(t), t["state"]) for t in run["tasks"]]
    return render(request, "run.html", _context(run, data, nodes, dag, rows, now, upstream))


def _label(task: Mapping[str, Any]) -> str:
    return task["name"] if "index" not in task else f"{task['name']}[{task['index']}]"


def _context(
    run: dict[str, Any],
    data: Mapping[str, Any],
    nodes: Mapping[str, Any],
    dag: Any,
    rows: Sequence[tuple[str, str]],
    now: datetime,
    upstream: Mapping[str, Any] | None,
) -> dict[str, Any]:
    ended = run["state"] in ("succeeded", "failed", "cancelled")
    rows_shown, hidden = visible_tasks(run["tasks"])
    errors = [t for t in run["tasks"] if t["error"]]
    failed_tasks = any(t["state"] in FAILED for t in run["tasks"])
    duration = run["duration"]
    if duration is None and run["started_at"] and not ended:
        duration = between(run["started_at"], now.isoformat())
    return {
        "run": run,
        "trigger": trigger_view(run["trigger"]),
        "duration": duration,
        "nodes": nodes,
        "dag": dag,
        "gantt": layout_gantt(rows, data["attempts"], now),
        "alerts": data["alerts"],
        "logs": data["logs"],
        "tail": TAIL,
        "task_rows": rows_shown,
        "hidden_instances": hidden,
        "errors": errors[:ERRORS],
        "hidden_errors": max(len(errors) - ERRORS, 0),
        "sla_events": [e for e in run["events"] if e["kind"] == "sla.missed"],
        "can_retry": ended and (run["state"] != "succeeded" or failed_tasks),
        "can_cancel": run["state"] in ("queued", "running") and not run["cancel_requested"],
        "ended": ended,
        "flow_loaded": upstream is not None,
    }
