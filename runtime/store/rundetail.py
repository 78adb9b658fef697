"""One run in full for the JSON API and the dashboard: ``show --json`` plus every attempt,
its SLA events, the alerts sent about it, why it waits, its mapped tasks' counts; and a run's
log lines a page at a time."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from runtime import codec
from runtime.errors import ParamError, RunNotFoundError
from runtime.store.queries import get_run

TASK_LABEL = re.compile(r"(?P<name>[^\[\]]+)(?:\[(?P<idx>\d+)\])?")


def label(name: str | None, idx: int | None) -> str | None:
    """A task's label as the CLI and the dashboard write it: ``load`` or ``load[3]``."""
    if name is None:
        return None
    return name if idx is None or idx < 0 else f"{name}[{idx}]"


def parse_label(text: str) -> tuple[str, int | None]:
    """(name, index or None) of a label.

    :raises ParamError: when *text* is neither ``name`` nor ``name[index]``
    """
    match = TASK_LABEL.fullmatch(text)
    if match is None:
        raise ParamError(f"task {text!r}: expected NAME or NAME[INDEX], like load or load[3]")
    return match["name"], None if match["idx"] is None else int(match["idx"])


def run_detail(conn: sqlite3.Connection, run_id: int) -> dict[str, Any]:
    """The run as ``show --json`` gives it (tasks, events, checks) plus ``attempts``,
    ``sla_events``, ``alerts``, ``waiting`` and ``mapped``.

    :raises RunNotFoundError: when there is no such run
    """
    run = get_run(conn, run_id)
    run["attempts"] = attempts_of(conn, run_id)
    run["sla_events"] = [e for e in run["events"] if e["kind"] == "sla.missed"]
    run["alerts"] = alerts_of(conn, run_id)
    run["mapped"] = mapped_counts(conn, run_id)
    run["waiting"] = waiting_reasons(conn, run)
    return run


def attempts_of(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """Every attempt of every task and instance, by start (not started yet: last)."""
    rows = conn.execute(
        "SELECT name, idx, attempt, state, started_at, ended_at, error_type, error_message, "
        "traceback, interrupted, worker FROM attempts WHERE run_id = ? "
        "ORDER BY started_at IS NULL, started_at, name, idx, attempt",
        (run_id,),
    )
    return [_attempt(a) for a in rows]


def _attempt(a: sqlite3.Row) -> dict[str, Any]:
    return {
        "task": label(a["name"], a["idx"]),
        "name": a["name"],
        "index": a["idx"] if a["idx"] >= 0 else None,
        "attempt": a["attempt"],
        "state": a["state"],
        "started_at": a["started_at"],
        "ended_at": a["ended_at"],
        "duration": _seconds(a["started_at"], a["ended_at"]),
        "error_type": a["error_type"],
        "error_message": a["error_message"],
        "traceback": a["traceback"],
        "interrupted": bool(a["interrupted"]),
        "worker": a["worker"],
    }


def _seconds(start: str | None, end: str | None) -> float | None:
    first, last = codec.parse_iso(start), codec.parse_iso(end)
    if first is None or last is None:
        return None
    return round((last - first).total_seconds(), 6)


def alerts_of(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """The alert outbox rows about the run, oldest first: where to, what, how it went. An
    alert sent inside a digest shows the digest's state and time. No payload, no answer:
    nothing a notifier was given (URLs, keys) is shown."""
    out = []
    for row in conn.execute(
        "SELECT o.id, o.created_at, o.event, o.kind, o.task, o.destination, o.state, "
        "o.attempts, o.next_at, o.last_error, o.delivered_at, o.digest_id, "
        "d.state AS digest_state, d.delivered_at AS digest_delivered_at "
        "FROM outbox o INDEXED BY outbox_by_run LEFT JOIN outbox d ON d.id = o.digest_id "
        "WHERE o.run_id = ? ORDER BY o.id",
        (run_id,),
    ):
        grouped = row["state"] == "grouped" and row["digest_id"] is not None
        pending = row["state"] in ("pending", "held")
        out.append(
            {
                "id": row["id"],
                "event": row["event"],
                "kind": row["kind"],
                "task": row["task"],
                "destination": row["destination"],
                "state": row["state"],
                "tries": row["attempts"],
                "last_error": row["last_error"],
                "created_at": row["created_at"],
                "sent_at": row["digest_delivered_at"] if grouped else row["delivered_at"],
                "next_attempt_at": codec.iso(datetime.fromtimestamp(row["next_at"], UTC))
                if pending
                else None,
                "digest": {"id": row["digest_id"], "state": row["digest_state"]}
                if grouped
                else None,
            }
        )
    return out


def mapped_counts(conn: sqlite3.Connection, run_id: int) -> dict[str, dict[str, int]]:
    """Per mapped task of the run: its instances by state, and ``total``."""
    out: dict[str, dict[str, int]] = {}
    for row in conn.execute(
        "SELECT name, state, COUNT(*) FROM tasks WHERE run_id = ? AND idx >= 0 "
        "GROUP BY name, state ORDER BY name, state",
        (run_id,),
    ):
        counts = out.setdefault(row[0], {"total": 0})
        counts[row[1]] = row[2]
        counts["total"] += row[2]
    return out


def waiting_reasons(conn: sqlite3.Connection, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Why *run* (as :func:`run_detail` builds it) waits, in words: the flow paused, its
    queue, the run's or its flow's wait reason; tasks waiting for a retry or for a slot.
    Empty when nothing waits."""
    out: list[dict[str, Any]] = []
    if run["state"] == "queued":
        out += _queued_reasons(conn, run)
    if run["state"] not in ("queued", "running"):
        return out
    if run["state"] == "running" and run["wait_reason"]:  # an orphan whose flow is not loaded
        out.append({"task": None, "text": run["wait_reason"], "until": None})
    for task in run["tasks"]:
        name = label(task["name"], task.get("index"))
        if task["state"] == "retrying":
            text = f"task {name} waits to retry"
            if task["next_attempt_at"]:
                text += f" at {task['next_attempt_at']}"
            if task["error"]:
                text += f" (attempt {task['attempts']} failed: {task['error']})"
            if task["reason"]:
                text += f"; {task['reason']}"
            item = {"task": name, "text": text, "until": task["next_attempt_at"]}
            out.append(item)
        elif task["state"] == "pending" and task["reason"]:
            out.append({"task": name, "text": f"task {name}: {task['reason']}", "until": None})
    return out


def _queued_reasons(conn: sqlite3.Connection, run: dict[str, Any]) -> list[dict[str, Any]]:
    flow = run["flow"]
    out: list[dict[str, Any]] = []
    paused = conn.execute("SELECT paused_at FROM paused WHERE flow = ?", (flow,)).fetchone()
    if paused is not None:
        out.append(
            {
                "task": None,
                "text": f"flow {flow!r} is paused (since {paused[0]}): "
                f"its queued runs start when it is unpaused",
                "until": None,
            }
        )
    if run["wait_reason"] and not (paused and "paused" in run["wait_reason"]):
        out.append({"task": None, "text": run["wait_reason"], "until": None})
    (ahead,) = conn.execute(
        "SELECT COUNT(*) FROM runs INDEXED BY runs_queued WHERE state = 'queued' AND flow = ? "
        "AND id < ?",
        (flow, run["id"]),
    ).fetchone()
    if ahead:
        many = "runs" if ahead > 1 else "run"
        out.append(
            {"task": None, "text": f"{ahead} queued {many} of {flow!r} before it", "until": None}
        )
    if not out:
        text = "queued: the service claims it when its flow's limits allow"
        out.append({"task": None, "text": text, "until": None})
    return out


# --- logs ---


def log_page(
    conn: sqlite3.Connection,
    run_id: int,
    task: str | None = None,
    after: int = 0,
    limit: int = 500,
) -> tuple[list[dict[str, Any]], bool]:
    """The run's log lines with an id above *after*, oldest first, at most *limit*; and
    whether more follow. *task*: ``load`` (with its instances) or ``load[3]``.

    Each task's lines are read from ``logs_by_run`` (run, name, id) in id order and stopped
    at *limit*, then merged: a page of a run with a million lines reads about one page.

    :raises RunNotFoundError: when there is no such run
    :raises ParamError: for a *task* that is not a label
    """
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise RunNotFoundError(run_id)
    names: list[str | None]
    if task is not None:
        label_name, idx = parse_label(task)
        names = [label_name]
    else:
        idx = None
        found = conn.execute("SELECT DISTINCT name FROM tasks WHERE run_id = ?", (run_id,))
        names = [None, *sorted(row[0] for row in found)]
    parts: list[str] = []
    args: list[Any] = []
    for name in names:
        eq = "name IS NULL" if name is None else "name = ?"
        part = (
            "SELECT * FROM (SELECT id, name, idx, attempt, ts, level, message FROM logs "
            f"INDEXED BY logs_by_run WHERE run_id = ? AND {eq} AND id > ?"
        )
        args += [run_id, *([] if name is None else [name]), after]
        if idx is not None:
            part += " AND idx = ?"
            args.append(idx)
        parts.append(part + " ORDER BY id LIMIT ?)")
        args.append(limit + 1)
    sql = " UNION ALL ".join(parts) + " ORDER BY id LIMIT ?"
    rows = conn.execute(sql, [*args, limit + 1]).fetchall()
    lines = [
        {
            "id": r["id"],
            "task": label(r["name"], r["idx"]),
            "name": r["name"],
            "index": r["idx"] if r["idx"] is not None and r["idx"] >= 0 else None,
            "attempt": r["attempt"],
            "ts": r["ts"],
            "level": r["level"],
            "message": r["message"],
        }
        for r in rows[:limit]
    ]
    return lines, len(rows) > limit
