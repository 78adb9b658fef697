"""Writes and reads behind trigger, cancel, backfill and the SLA monitor; SQL stays here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from runtime import codec
from runtime.store import Store
from runtime.store.schema import INSERT_EVENT

if TYPE_CHECKING:
    from runtime.define.flow import Flow

SLA_MISSED = "sla.missed"
_CHUNK = 500  # keys per IN (...): far below SQLite's variable limit


class CancelOutcome(StrEnum):
    """What ``sluiceway cancel`` did to a run."""

    CANCELLED = "cancelled"  # it was queued: cancelled at once, it never starts
    REQUESTED = "requested"  # it is running: the process running it stops it
    ENDED = "ended"  # it had already ended: nothing changed
    NOT_FOUND = "not found"


# --- writes (each one op in the writer's transaction, on the writer's sqlite3 connection) ---


async def request_cancel(store: Store, run_id: int, now: datetime) -> tuple[CancelOutcome, str]:
    """Cancel run *run_id*: a queued run ends ``cancelled`` now; a running one gets
    ``cancel_requested = 1``; an ended one is left alone.

    One transaction, and :meth:`Store.claim_runs` moves a run out of ``queued`` with one
    guarded UPDATE: a service claiming the run at the same moment either finds it cancelled
    or claims it first, and then this sets the request.

    :returns: what happened and the run's state afterwards (``""`` when not found)
    """
    ended_at = codec.iso(now)

    def op(db: sqlite3.Connection) -> tuple[CancelOutcome, str]:
        cur = db.execute(
            "UPDATE runs SET state = 'cancelled', ended_at = ?, cancel_requested = 1, "
            "wait_reason = NULL, error = 'cancelled while queued' "
            "WHERE id = ? AND state = 'queued'",
            (ended_at, run_id),
        )
        if cur.rowcount == 1:
            return CancelOutcome.CANCELLED, "cancelled"
        cur = db.execute(
            "UPDATE runs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (run_id,)
        )
        if cur.rowcount == 1:
            return CancelOutcome.REQUESTED, "running"
        row = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return CancelOutcome.NOT_FOUND, ""
        return CancelOutcome.ENDED, str(row[0])

    result: tuple[CancelOutcome, str] = await store.writer.submit(op)
    return result


async def record_sla_miss(
    store: Store, run_id: int, task: str | None, now: datetime, payload: dict[str, Any]
) -> bool:
    """Commit an ``sla.missed`` event of *run_id* (and *task*, ``None`` for the run's own SLA).

    The unique index ``events_once`` keeps one row per (run, task), however many monitors or
    restarts detect the miss.

    :returns: True when this call recorded it, False when it was recorded before
    """
    row = (codec.iso(now), SLA_MISSED, run_id, task, codec.dumps_str(payload))

    def op(db: sqlite3.Connection) -> bool:
        return db.execute(INSERT_EVENT, row).rowcount == 1

    recorded: bool = await store.writer.submit(op)
    return recorded


def record_served(store: Store, flows: Iterable[Flow]) -> None:
    """Replace the record of the flows the service has loaded (queued: written with the next
    batch); ``[]`` when it stops. A flow whose params cannot be stored is left out: no run of
    it could be queued anyway."""
    rows = []
    for flow in flows:
        try:
            rows.append((flow.name, codec.dumps_str(flow.params), flow.source_hash()))
        except codec.NotSerializable:
            continue

    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM served_flows")
        db.executemany(
            "INSERT INTO served_flows (flow, params, source_hash) VALUES (?, ?, ?)", rows
        )

    store.writer.put_op(op)


# --- reads (plain functions on a sqlite3 connection, or through Store.read) ---


def served_flow(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """The params' defaults and source hash of flow *name* as the service has it loaded
    (recorded by :func:`record_served`); ``None`` when it has not."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'served_flows'"
    ).fetchone()
    if found is None:  # a database from before schema version 4
        return None
    row = conn.execute(
        "SELECT params, source_hash FROM served_flows WHERE flow = ?", (name,)
    ).fetchone()
    if row is None:
        return None
    return {"name": name, "params": codec.loads(row[0]), "source_hash": row[1]}


def run_brief(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    """A run's flow, state, logical date (aware) and trigger kind; ``None`` when missing."""
    row = conn.execute(
        "SELECT flow, state, logical_date, trigger, cancel_requested FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    trigger = codec.loads(row[3])
    return {
        "id": run_id,
        "flow": row[0],
        "state": row[1],
        "logical_date": codec.parse_iso(row[2]),
        "trigger_kind": trigger.get("kind") if isinstance(trigger, dict) else None,
        "cancel_requested": bool(row[4]),
    }


def runs_by_keys(
    conn: sqlite3.Connection, flow: str, keys: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The runs of *flow* made with any of the idempotency *keys*, by key."""
    wanted = list(dict.fromkeys(keys))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT id, idempotency_key, state, params FROM runs "
            f"WHERE flow = ? AND idempotency_key IN ({marks})",
            (flow, *chunk),
        ):
            out[row[1]] = {"id": row[0], "state": row[2], "params": codec.loads(row[3])}
    return out


def latest_reruns(
    conn: sqlite3.Connection, flow: str, run_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """For each of *run_ids*, the newest run that redid it: a retry (``retry_of``) or a
    backfill rerun (trigger ``rerun_of``), followed through chains. Runs never redone are
    their own newest run. Values have ``id``, ``state`` and ``params``."""
    redone_by: dict[int, int] = {}  # run -> the newest run made to redo it
    runs: dict[int, dict[str, Any]] = {}
    for row in conn.execute(
        "SELECT id, state, params, retry_of, trigger FROM runs WHERE flow = ? AND "
        "(retry_of IS NOT NULL OR trigger LIKE '%\"rerun_of\"%') ORDER BY id",
        (flow,),
    ):
        trigger = codec.loads(row[4])
        parent = row[3] if row[3] is not None else trigger.get("rerun_of")
        runs[row[0]] = {"id": row[0], "state": row[1], "params": codec.loads(row[2])}
        if isinstance(parent, int):
            redone_by[parent] = row[0]  # ORDER BY id: the newest wins
    out: dict[int, dict[str, Any]] = {}
    for run_id in run_ids:
        seen = {run_id}
        current = run_id
        while current in redone_by and redone_by[current] not in seen:
            current = redone_by[current]
            seen.add(current)
        if current != run_id:
            out[run_id] = runs[current]
    return out
