"""The alert outbox: rows queued with the state change that causes them, digests, recoveries,
delivery marks, and the reads of the sender and of ``sluiceway alerts``.

An alert is queued with the writer's ``put_op_from`` (one op gathering the alerts of one
batch, :func:`queue_all`, built when the batch is taken): its row is committed in the same
transaction as the run or task state queued before it, so after a crash either both exist
or neither does. Payloads and errors are redacted before they are stored.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime import codec
from runtime.alerting import RESOLVABLE
from runtime.redact import redact

__all__ = [
    "Delivery",
    "Queued",
    "close_windows",
    "due",
    "list_deliveries",
    "mark",
    "queue_alert",
    "queue_all",
    "recover",
    "resend",
    "waiting",
]

log = logging.getLogger("sluiceway.runtime.store.outbox")

ACTIVE = ("held", "pending")

_INSERT = (
    "INSERT INTO outbox (created_at, event, kind, flow, run_id, task, destination, state, "
    "next_at, payload, open) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    "id, created_at, event, kind, flow, run_id, task, destination, state, attempts, next_at, "
    "last_error, answer, delivered_at, payload, digest_id"
)


@dataclass(frozen=True, slots=True)
class Queued:
    """Where one alert goes: a destination, and how (digest window, whether it stays open
    for a recovery)."""

    destination: str
    digest: float | None = None
    recovers: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row as the sender and ``sluiceway alerts`` read it."""

    id: int
    created_at: str
    event: str
    kind: str
    flow: str | None
    run_id: int | None
    task: str | None
    destination: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    answer: str | None
    delivered_at: str | None
    payload: str
    digest_id: int | None

    def alert(self) -> dict[str, Any]:
        """The alert to send: the stored payload with its idempotency id."""
        alert: dict[str, Any] = codec.loads(self.payload)
        alert["id"] = f"sluiceway-{self.id}"
        return alert

    def as_json(self) -> dict[str, Any]:
        """What ``sluiceway alerts --json`` prints for it."""
        return {
            "id": self.id,
            "event": self.event,
            "kind": self.kind,
            "flow": self.flow,
            "run_id": self.run_id,
            "task": self.task,
            "destination": self.destination,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "answer": self.answer,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
            # when a pending row is tried next, when a held one's digest window closes
            "next_attempt_at": codec.iso(datetime.fromtimestamp(self.next_at, UTC))
            if self.state in ACTIVE
            else None,
            "digest_id": self.digest_id,
        }


def _dumps(payload: Mapping[str, Any]) -> str:
    return redact(codec.dumps_str(dict(payload)))


def queue_alert(
    db: sqlite3.Connection, alert: dict[str, Any], to: Sequence[Queued], now: datetime
) -> None:
    """Insert *alert* once per destination of *to* (runs inside the writer's transaction).

    A destination with a digest holds it until the flow's window closes (opened by the first
    alert held); the run's logical date is read from the runs table when not given.
    """
    if alert.get("run_id") is not None and alert.get("logical_date") is None:
        row = db.execute("SELECT logical_date FROM runs WHERE id = ?", (alert["run_id"],))
        found = row.fetchone()
        alert["logical_date"] = found[0] if found else None
    payload = _dumps(alert)
    created, at = codec.iso(now), now.timestamp()
    flow, event = alert.get("flow"), alert["event"]
    for q in to:
        state, next_at = "pending", at
        if q.digest is not None and flow is not None:
            state = "held"
            (window,) = db.execute(
                "SELECT MIN(next_at) FROM outbox WHERE state = 'held' AND destination = ? "
                "AND flow = ?",
                (q.destination, flow),
            ).fetchone()
            next_at = window if window is not None else at + q.digest
        opened = int(q.recovers and event in RESOLVABLE)
        db.execute(
            _INSERT,
            (
                created,
                event,
                alert["kind"],
                flow,
                alert.get("run_id"),
                alert.get("task"),
                q.destination,
                state,
                next_at,
                payload,
                opened,
            ),
        )


def queue_all(db: sqlite3.Connection, ops: Sequence[Callable[[sqlite3.Connection], Any]]) -> None:
    """Run *ops* (each queues one alert, or a recovery) in order, in one savepoint: a batch's
    alerts as one op of the writer. When one raises, all again, each under its own savepoint,
    so the one that fails is left out alone (logged), as when each was an op of its own."""
    db.execute("SAVEPOINT alerts")
    try:
        for op in ops:
            op(db)
    except Exception:  # noqa: BLE001 - rare: the slow way, one by one
        db.execute("ROLLBACK TO alerts")
        for op in ops:
            db.execute("SAVEPOINT one")
            try:
                op(db)
            except Exception:
                log.exception("an alert could not be queued; left out")
                db.execute("ROLLBACK TO one")
            db.execute("RELEASE one")
    db.execute("RELEASE alerts")


def close_windows(db: sqlite3.Connection, now: float, flow: str | None = None) -> int:
    """Turn the held alerts whose digest window closed (or all of *flow*'s, when given) into
    deliveries: one alone goes as it is, several as one digest; how many deliveries."""
    sql = "SELECT " + _COLUMNS + " FROM outbox WHERE state = 'held'"
    args: tuple[Any, ...] = ()
    if flow is None:
        sql += " AND next_at <= ?"
        args = (now,)
    else:
        sql += " AND flow = ?"
        args = (flow,)
    groups: dict[tuple[str, str | None], list[Delivery]] = {}
    for row in db.execute(sql + " ORDER BY id", args).fetchall():
        d = Delivery(*row)
        groups.setdefault((d.destination, d.flow), []).append(d)
    for (destination, group_flow), held in groups.items():
        if len(held) == 1:
            db.execute(
                "UPDATE outbox SET state = 'pending', next_at = ? WHERE id = ?", (now, held[0].id)
            )
            continue
        digest = _digest(group_flow, [codec.loads(d.payload) for d in held])
        cur = db.execute(
            _INSERT,
            (
                held[-1].created_at,
                digest["event"],
                "digest",
                group_flow,
                None,
                None,
                destination,
                "pending",
                now,
                _dumps(digest),
                0,
            ),
        )
        db.executemany(
            "UPDATE outbox SET state = 'grouped', digest_id = ? WHERE id = ?",
            [(cur.lastrowid, d.id) for d in held],
        )
    return len(groups)


def _digest(flow: str | None, items: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item["event"]] = counts.get(item["event"], 0) + 1
    event = max(counts, key=lambda e: counts[e])
    what = ", ".join(f"{n} {e}" for e, n in counts.items())
    return {
        "kind": "digest",
        "event": event,
        "summary": f"{flow}: {len(items)} alerts grouped: {what}",
        "flow": flow,
        "run_id": items[-1].get("run_id"),
        "task": None,
        "state": items[-1].get("state"),
        "error": items[-1].get("error"),
        "logical_date": items[-1].get("logical_date"),
        "ts": items[-1].get("ts"),
        "url": items[-1].get("url"),
        "details": {"count": len(items), "events": counts},
        "items": items,
        "resolves": [],
    }


def recover(
    db: sqlite3.Connection, alert: dict[str, Any], destinations: Sequence[str], now: datetime
) -> None:
    """The flow of *alert* (a ``run.recovered`` recovery) succeeded: send what its digest
    windows hold now, then a recovery to each of *destinations* that has open failures of
    the flow, listing them in ``resolves``; those are closed."""
    flow = alert["flow"]
    close_windows(db, now.timestamp(), flow)
    for destination in destinations:
        rows = db.execute(
            "SELECT DISTINCT event FROM outbox WHERE destination = ? AND flow = ? AND open = 1",
            (destination, flow),
        ).fetchall()
        if not rows:
            continue
        db.execute(
            "UPDATE outbox SET open = 0 WHERE destination = ? AND flow = ? AND open = 1",
            (destination, flow),
        )
        alert["resolves"] = sorted(r[0] for r in rows)
        queue_alert(db, dict(alert), [Queued(destination)], now)


def mark(
    db: sqlite3.Connection,
    row_id: int,
    *,
    state: str,
    now: datetime,
    answer: str | None = None,
    error: str | None = None,
    next_at: float | None = None,
) -> None:
    """Record one delivery attempt of row *row_id*: delivered (with the *answer*), pending
    again at *next_at*, or dead (with the redacted *error*)."""
    db.execute(
        "UPDATE outbox SET state = ?, attempts = attempts + 1, answer = COALESCE(?, answer), "
        "last_error = COALESCE(?, last_error), next_at = COALESCE(?, next_at), "
        "delivered_at = ? WHERE id = ?",
        (
            state,
            None if answer is None else redact(answer),
            None if error is None else redact(error),
            next_at,
            codec.iso(now) if state == "delivered" else None,
            row_id,
        ),
    )


def resend(db: sqlite3.Connection, row_id: int, now: float) -> str | None:
    """Put dead letter *row_id* back to pending, due now (its tries start again); ``None``
    when done, else why not."""
    row = db.execute("SELECT state FROM outbox WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        return f"no alert delivery {row_id}"
    if row[0] != "dead":
        return f"alert delivery {row_id} is {row[0]}, not dead: only a dead letter is resent"
    db.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_at = ? WHERE id = ?",
        (now, row_id),
    )
    return None


# --- reads (the reader connection, in a worker thread) ---


def due(conn: sqlite3.Connection, limit: int = 500) -> list[Delivery]:
    """The pending rows in order of id (each destination's lane keeps that order)."""
    rows = conn.execute(
        "SELECT " + _COLUMNS + " FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [Delivery(*row) for row in rows]


def waiting(conn: sqlite3.Connection) -> float | None:
    """When the next held digest window closes (unix seconds), or ``None``."""
    (at,) = conn.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'held'").fetchone()
    return None if at is None else float(at)


def list_deliveries(
    conn: sqlite3.Connection, *, failed: bool = False, limit: int = 100
) -> list[Delivery]:
    """Outbox rows, newest first; *failed*: only dead letters and rows that failed a try."""
    where = "WHERE state = 'dead' OR (state = 'pending' AND last_error IS NOT NULL)"
    rows = conn.execute(
        "SELECT " + _COLUMNS + f" FROM outbox {where if failed else ''} ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Delivery(*row) for row in rows]
