"""Read queries over the run history; plain functions on a sqlite3 connection."""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

from runtime import codec
from runtime.errors import ParamError, RunNotFoundError

log = logging.getLogger("sluiceway.runtime.store")

_TASK_LABEL = re.compile(r"(?P<name>[^\[\]]+)(?:\[(?P<idx>\d+)\])?")

_RUN_COLUMNS = (
    "id, flow, state, params, trigger, logical_date, idempotency_key, retry_of, created_at, "
    "started_at, ended_at, error, {wait_reason} AS wait_reason, epoch, cancel_requested, "
    "EXISTS (SELECT 1 FROM events e WHERE e.run_id = runs.id AND e.kind = 'sla.missed') "
    "AS sla_missed"
)
# a queued run without a reason of its own shows its flow's (runtime.store.queue)
_QUEUE_WAIT = (
    "CASE WHEN state = 'queued' AND wait_reason IS NULL THEN "
    "(SELECT w.reason FROM queue_waits w WHERE w.flow = runs.flow) ELSE wait_reason END"
)


def _run_columns(conn: sqlite3.Connection) -> str:
    # a database from before schema version 3 (read without migrating: a CLI upgraded
    # before the service restarted) has no queue_waits table
    found = _has_table(conn, "queue_waits")
    return _RUN_COLUMNS.format(wait_reason=_QUEUE_WAIT if found else "wait_reason")


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "flow": row["flow"],
        "state": row["state"],
        "params": codec.loads(row["params"]),
        "trigger": codec.loads(row["trigger"]),
        "logical_date": row["logical_date"],
        "idempotency_key": row["idempotency_key"],
        "retry_of": row["retry_of"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration": _duration(row["started_at"], row["ended_at"]),
        "error": row["error"],
        "wait_reason": row["wait_reason"],
        "cancel_requested": bool(row["cancel_requested"]),
        "sla_missed": bool(row["sla_missed"]),
    }


def _duration(start: str | None, end: str | None) -> float | None:
    first, last = codec.parse_iso(start), codec.parse_iso(end)
    if first is None or last is None:
        return None
    return round((last - first).total_seconds(), 6)


def list_runs(
    conn: sqlite3.Connection,
    flow: str | None = None,
    state: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Runs, newest first, optionally of one flow and/or in one state."""
    where, args = [], []
    if flow is not None:
        where.append("flow = ?")
        args.append(flow)
    if state is not None:
        where.append("state = ?")
        args.append(state)
    sql = f"SELECT {_run_columns(conn)} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return [_run_dict(row) for row in conn.execute(sql, (*args, limit))]


def runs_by_id(conn: sqlite3.Connection, run_ids: list[int]) -> list[dict[str, Any]]:
    """The runs *run_ids* in that order, each as one element of :func:`list_runs` (the
    ``runs --json`` shape); ids with no run are left out."""
    if not run_ids:
        return []
    marks = ",".join("?" * len(run_ids))
    sql = f"SELECT {_run_columns(conn)} FROM runs WHERE id IN ({marks})"
    found = {row["id"]: _run_dict(row) for row in conn.execute(sql, run_ids)}
    return [found[run_id] for run_id in run_ids if run_id in found]


def get_run(conn: sqlite3.Connection, run_id: int) -> dict[str, Any]:
    """One run with its tasks (mapped instances as separate items with an ``index``).

    :raises RunNotFoundError: when there is no such run
    """
    sql = f"SELECT {_run_columns(conn)} FROM runs WHERE id = ?"
    row = conn.execute(sql, (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    run = _run_dict(row)
    errors, tries = _attempts_by_task(conn, run_id)
    tasks = []
    for t in conn.execute(
        "SELECT name, idx, state, attempts, started_at, ended_at, next_attempt_at, error, reason "
        "FROM tasks WHERE run_id = ? ORDER BY rowid",
        (run_id,),
    ).fetchall():
        item: dict[str, Any] = {"name": t["name"]}
        if t["idx"] >= 0:
            item["index"] = t["idx"]
        last_error = errors.get((t["name"], t["idx"]))
        item.update(
            state=t["state"],
            attempts=t["attempts"],
            started_at=t["started_at"],
            ended_at=t["ended_at"],
            duration=_duration(t["started_at"], t["ended_at"]),
            next_attempt_at=t["next_attempt_at"],
            error=t["error"],
            error_type=last_error["type"] if last_error and t["error"] else None,
            traceback=last_error["traceback"] if last_error and t["error"] else None,
            reason=t["reason"],
            # each attempt, with where it ran (a Dask worker's address; None: in the service)
            tries=sorted(tries.get((t["name"], t["idx"]), ()), key=lambda a: a["attempt"]),
        )
        tasks.append(item)
    # rowid is creation order (topological at run start); instances sit under their task
    first: dict[str, int] = {}
    for pos, item in enumerate(tasks):
        first.setdefault(item["name"], pos)
    tasks.sort(key=lambda item: (first[item["name"]], item.get("index", -1)))
    run["tasks"] = tasks
    run["events"] = [
        {**codec.loads(e["payload"]), "ts": e["ts"], "kind": e["kind"], "task": e["task"]}
        for e in conn.execute(
            "SELECT ts, kind, task, payload FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        )
    ]
    run["checks"] = get_checks(conn, run_id)
    return run


Attempts = dict[tuple[str, int], list[dict[str, Any]]]


def _attempts_by_task(
    conn: sqlite3.Connection, run_id: int
) -> tuple[dict[tuple[str, int], dict[str, Any]], Attempts]:
    """Per (task, idx) of a run: its latest error, and each attempt with where it ran."""
    errors: dict[tuple[str, int], dict[str, Any]] = {}
    tries: Attempts = {}
    for att in get_attempts(conn, run_id, traceback=True):
        key = (att["name"], att["idx"])
        tries.setdefault(key, []).append(
            {k: att[k] for k in ("attempt", "state", "started_at", "ended_at", "worker")}
        )
        if att["error_type"] is not None:
            errors[key] = {
                "type": att["error_type"],
                "message": att["error_message"],
                "attempt": att["attempt"],
                "traceback": att["traceback"],
            }
    return errors, tries


def get_checks(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """The data-quality checks of a run, in the order they were made."""
    if not _has_table(conn, "checks"):  # a database not yet migrated (read-only CLI)
        return []
    return [
        {
            "task": c["task"],
            **({"index": c["idx"]} if c["idx"] >= 0 else {}),
            "attempt": c["attempt"],
            "name": c["name"],
            "passed": bool(c["passed"]),
            "severity": c["severity"],
            "detail": c["detail"],
            "ts": c["ts"],
        }
        for c in conn.execute(
            "SELECT task, idx, attempt, ts, name, passed, severity, detail FROM checks "
            "WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
    ]


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def get_attempts(
    conn: sqlite3.Connection, run_id: int, *, traceback: bool = False
) -> list[dict[str, Any]]:
    """Every attempt of every task of a run, in the order they were made, with ``worker``:
    where it ran (``None``: in the service's own process)."""
    # a database from before schema version 11 (read without migrating) has no worker column
    columns = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
    worker = "worker" if "worker" in columns else "NULL AS worker"
    extra = ", traceback" if traceback else ""
    return [
        dict(row)
        for row in conn.execute(
            "SELECT name, idx, attempt, state, started_at, ended_at, error_type, error_message, "
            f"{worker}{extra} FROM attempts WHERE run_id = ? "
            "ORDER BY started_at, name, idx, attempt",
            (run_id,),
        )
    ]


def get_logs(
    conn: sqlite3.Connection, run_id: int, task: str | None = None
) -> list[dict[str, Any]]:
    """A run's stored log lines in order, optionally of one task (``load``, with its mapped
    instances) or one instance (``load[3]``).

    :raises RunNotFoundError: when there is no such run
    :raises ParamError: when *task* is neither ``name`` nor ``name[index]``
    """
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise RunNotFoundError(run_id)
    sql = "SELECT name, idx, attempt, ts, level, message FROM logs WHERE run_id = ?"
    args: list[Any] = [run_id]
    if task is not None:
        match = _TASK_LABEL.fullmatch(task)
        if match is None:
            raise ParamError(f"--task {task!r}: expected NAME or NAME[INDEX], like load or load[3]")
        sql += " AND name = ?"
        args.append(match["name"])
        if match["idx"] is not None:
            sql += " AND idx = ?"
            args.append(int(match["idx"]))
    return [dict(row) for row in conn.execute(sql + " ORDER BY id", args)]


def stored_results(conn: sqlite3.Connection, run_id: int) -> dict[tuple[str, int], Any]:
    """Results of the succeeded tasks (and instances) of a run that could be stored, as the
    tasks returned them (codec.decode_result). A result that cannot be read back is left out
    and logged: its task runs again rather than hand on a different value."""
    out: dict[tuple[str, int], Any] = {}
    for row in conn.execute(
        "SELECT name, idx, result FROM tasks WHERE run_id = ? AND state = 'succeeded' "
        "AND has_result = 1",
        (run_id,),
    ):
        try:
            out[(row["name"], row["idx"])] = codec.decode_result(row["result"])
        except (TypeError, ValueError) as exc:  # codec.Undecodable, or damaged elsewhere
            label = row["name"] if row["idx"] < 0 else f"{row['name']}[{row['idx']}]"
            log.warning(
                "run=%s task=%s stored result cannot be read back, so it runs again: %s",
                run_id,
                label,
                exc,
            )
    return out


def interrupted_tasks(conn: sqlite3.Connection, run_id: int) -> set[tuple[str, int]]:
    """(name, idx) of the tasks (and instances) of a run whose newest attempt is flagged
    interrupted: a service shutdown stopped it, or a restart found it left running."""
    return {
        (row["name"], row["idx"])
        for row in conn.execute(
            "SELECT name, idx FROM attempts a WHERE run_id = ? AND interrupted = 1 AND attempt = "
            "(SELECT MAX(attempt) FROM attempts b "
            "WHERE b.run_id = a.run_id AND b.name = a.name AND b.idx = a.idx)",
            (run_id,),
        )
    }


def flow_summaries(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Per flow: number of runs and the newest run's id, state and end time."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(
        "SELECT r.flow, r.id, r.state, r.ended_at, c.n FROM runs r JOIN "
        "(SELECT flow, MAX(id) AS last, COUNT(*) AS n FROM runs GROUP BY flow) c "
        "ON r.id = c.last"
    ):
        out[row["flow"]] = {
            "runs": row["n"],
            "last_run": row["id"],
            "last_state": row["state"],
            "last_ended_at": row["ended_at"],
        }
    return out


def runs_to_recover(conn: sqlite3.Connection, epoch: int) -> list[tuple[int, str]]:
    """(id, flow) of runs left running by a process that is gone, oldest first. Runs of
    another live process (a `sluiceway run` beside the service) are not orphans."""
    return _unowned(conn, "running", epoch, limit=-1)


def _unowned(
    conn: sqlite3.Connection, state: str, epoch: int, *, limit: int
) -> list[tuple[int, str]]:
    from runtime.store.lock import process_alive

    rows = conn.execute(
        "SELECT r.id, r.flow, r.epoch, e.pid, e.boot_id, e.proc_start, e.stopped_at FROM runs r "
        "LEFT JOIN epochs e ON e.id = r.epoch "
        "WHERE r.state = ? AND (r.epoch IS NULL OR r.epoch != ?) ORDER BY r.id LIMIT ?",
        (state, epoch, limit),
    ).fetchall()
    alive: dict[tuple[int, str, str], bool] = {}
    out = []
    for row in rows:
        if row["pid"] is not None and row["stopped_at"] is None:
            ident = (row["pid"], row["boot_id"], row["proc_start"])
            if ident not in alive:
                alive[ident] = process_alive(*ident)
            if alive[ident]:
                continue
        out.append((row["id"], row["flow"]))
    return out


def cancel_requests(conn: sqlite3.Connection, run_ids: list[int]) -> list[int]:
    """Which of *run_ids* another process asked to cancel."""
    if not run_ids:
        return []
    marks = ",".join("?" * len(run_ids))
    return [
        row["id"]
        for row in conn.execute(
            f"SELECT id FROM runs WHERE cancel_requested = 1 AND id IN ({marks})", run_ids
        )
    ]
