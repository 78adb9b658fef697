"""CLI: validate, flows, runs, show, logs — reading flow files and the run history."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from runtime import codec
from runtime.cli.output import EXIT_FAILED, EXIT_OK, err, out
from runtime.config import Config
from runtime.errors import ParamError

T = TypeVar("T")


def cmd_validate(args: argparse.Namespace, config: Config) -> int:
    from runtime.define.loader import load_flows

    # each file is imported in a child process first: one that ends the process is named
    loaded = load_flows(config.flows, config.pools, isolate=True, executors=config.executors)
    for problem in loaded.problems:
        err(problem)
    if args.order:
        for name, flow in sorted(loaded.flows.items()):
            out(f"{name}: {flow.graph.describe_order()}")
    if loaded.problems:
        err(f"{len(loaded.problems)} problem(s) in {config.flows}")
        return EXIT_FAILED
    if not args.order:
        out(f"{len(loaded.flows)} flow(s) OK in {config.flows}")
    return EXIT_OK


def cmd_flows(args: argparse.Namespace, config: Config) -> int:
    from runtime.define.loader import load_flows
    from runtime.store import connect_reader, queries

    loaded = load_flows(config.flows, config.pools, executors=config.executors)
    from runtime.store.cursors import paused_flows

    summaries: dict[str, dict[str, Any]] = {}
    paused: set[str] = set()
    if config.db.exists():
        conn = connect_reader(config.db)
        try:
            summaries = queries.flow_summaries(conn)
            paused = paused_flows(conn)
        finally:
            conn.close()
    rows = []
    for name, flow in sorted(loaded.flows.items()):
        rows.append(
            {
                "name": name,
                "file": str(flow.path),
                "tasks": list(flow.graph.order),
                "params": codec.loads(codec.encode(flow.params)),  # as `show --json` shows them
                "description": flow.description,
                "max_concurrency": flow.max_concurrency,
                "max_active_runs": flow.max_active_runs,
                "triggers": [trigger.to_dict() for trigger in flow.triggers],
                "paused": name in paused,
                **summaries.get(name, {"runs": 0, "last_run": None, "last_state": None}),
            }
        )
    for problem in loaded.problems:
        err(problem)
    if args.json:
        out(codec.pretty(rows))
    else:
        out(f"{'FLOW':<20} {'TASKS':>5} {'RUNS':>5}  {'LAST':<10}  DESCRIPTION")
        for row, flow in zip(rows, (loaded.flows[r["name"]] for r in rows), strict=True):
            last = row["last_state"] or "-"
            desc = row["description"] or ""
            out(f"{row['name']:<20} {len(row['tasks']):>5} {row['runs']:>5}  {last:<10}  {desc}")
            schedule = ", ".join(str(trigger) for trigger in flow.triggers)
            if schedule:
                state = "paused: " if row["paused"] else ""
                out(f"{'':<45}{state}{schedule}")
    return EXIT_FAILED if loaded.problems else EXIT_OK


def _query(config: Config, fn: Callable[..., T], *args: Any) -> T:
    """Run one query of runtime.store.queries on a read connection to the configured db."""
    from runtime.store import connect_reader

    conn = connect_reader(config.db)
    try:
        return fn(conn, *args)
    finally:
        conn.close()


def cmd_runs(args: argparse.Namespace, config: Config) -> int:
    from runtime.store import queries

    if args.limit < 1:
        raise ParamError("--limit must be at least 1")
    runs = _query(config, queries.list_runs, args.flow, args.state, args.limit)
    if args.json:
        out(codec.pretty(runs))
        return EXIT_OK
    out(f"{'ID':>6}  {'FLOW':<20} {'STATE':<10} {'STARTED':<20} {'DURATION':>9}")
    for run in runs:
        started = (run["started_at"] or run["created_at"] or "")[:19].replace("T", " ")
        took = f"{run['duration']:.2f}s" if run["duration"] is not None else "-"
        sla = "  SLA missed" if run["sla_missed"] else ""  # a marker, only where it applies
        out(f"{run['id']:>6}  {run['flow']:<20} {run['state']:<10} {started:<20} {took:>9}{sla}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    from runtime.store import queries

    run = _query(config, queries.get_run, args.run_id)
    if args.json:
        out(codec.pretty(run))
        return EXIT_OK
    out(f"run {run['id']}  flow {run['flow']}  {run['state']}")
    out(f"  logical date {run['logical_date']}   params {codec.readable(run['params'])}")
    out(f"  trigger {codec.dumps_str(run['trigger'])}")
    if run["retry_of"]:
        out(f"  retry of run {run['retry_of']}")
    took = f"{run['duration']:.2f}s" if run["duration"] is not None else "-"
    out(f"  started {run['started_at'] or '-'}   ended {run['ended_at'] or '-'}   took {took}")
    if run["wait_reason"] and run["state"] in ("queued", "running"):  # running: an orphan
        out(f"  {run['wait_reason']}")
    for event in run["events"]:
        if event["kind"] == "sla.missed":
            what = f"task {event['task']}" if event["task"] else "run"
            out(f"  SLA missed: {what} still going at {event['deadline']} (sla {event['sla']:g}s)")
    out("")
    out(f"  {'TASK':<24} {'STATE':<16} {'TRIES':>5} {'DURATION':>9}  DETAIL")
    for task in run["tasks"]:
        label = task["name"] if "index" not in task else f"{task['name']}[{task['index']}]"
        took = f"{task['duration']:.2f}s" if task["duration"] is not None else "-"
        detail = task["error"] or task["reason"] or ""
        if task["state"] == "retrying" and task["reason"]:  # why the next one has not started
            detail = f"{task['reason']}: {detail}"
        elif task["state"] == "retrying" and task["next_attempt_at"]:
            detail = f"next attempt at {task['next_attempt_at']}: {detail}"
        out(f"  {label:<24} {task['state']:<16} {task['attempts']:>5} {took:>9}  {detail}")
        remote = [f"#{a['attempt']} {a['worker']}" for a in task["tries"] if a["worker"]]
        if remote:  # where attempts ran when not in the service (a Dask worker's address)
            out(f"  {'':<24} ran on {', '.join(remote)}")
    _show_checks(run["checks"])
    if run["error"]:
        out(f"\n  {run['error']}")
    return EXIT_OK


def _show_checks(checks: list[dict[str, Any]]) -> None:
    """The run's data-quality checks: one line each, failed ones marked by severity."""
    if not checks:
        return
    out("")
    out(f"  {'CHECK':<24} {'TASK':<24} {'RESULT':<8} DETAIL")
    for c in checks:
        task = c["task"] if "index" not in c else f"{c['task']}[{c['index']}]"
        if c["attempt"] > 1:
            task += f" #{c['attempt']}"
        result = "passed" if c["passed"] else ("FAILED" if c["severity"] == "error" else "warn")
        out(f"  {c['name']:<24} {task:<24} {result:<8} {c['detail'] or ''}".rstrip())


def cmd_logs(args: argparse.Namespace, config: Config) -> int:
    from runtime.store import queries

    lines = _query(config, queries.get_logs, args.run_id, args.task)
    for line in lines:
        label = (
            line["name"]
            if line["idx"] is None or line["idx"] < 0
            else f"{line['name']}[{line['idx']}]"
        )
        out(f"{line['ts']} {line['level']:<7} {label} #{line['attempt']}: {line['message']}")
    return EXIT_OK
