"""Queuing the retry of an ended run for the service, checked and written in one transaction
(``POST /api/runs/{run_id}/retry``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runtime import codec
from runtime.store import Store, schema

if TYPE_CHECKING:
    from collections.abc import Callable

RETRYABLE = ("failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What :func:`queue_retry` did.

    :ivar run_id: the retry's run (new, or the one the idempotency key made before); ``None``
        when nothing was queued
    :ivar created: this call queued it
    :ivar refused: why nothing was queued (``not_found``, ``not_ended``, ``succeeded``,
        ``retrying``: a retry of it is queued or running, ``other_flow``), with *detail*
    """

    run_id: int | None
    created: bool = False
    refused: str | None = None
    detail: str = ""
    flow: str = ""


async def queue_retry(
    store: Store,
    run_id: int,
    *,
    resolve: Callable[[str, dict[str, Any]], tuple[dict[str, Any], str] | None],
    key: str | None,
    now: datetime,
    via: str = "api",
) -> RetryOutcome:
    """Queue a run that retries ended run *run_id* (``retry_of`` set: the service reruns its
    failed, upstream_failed and cancelled tasks and reuses the stored results of the others).

    Checked in the transaction that queues it: the run must have ended without succeeding,
    and no retry of it may be queued or running (a second click does not run it twice).
    With *key*, the same key again returns the first retry (``created`` False).

    :param resolve: ``(flow name, stored params) -> (params, source hash)`` of the flow as
        loaded, or ``None`` when it is not loaded
    """
    trigger = codec.dumps_str({"kind": "retry", "run_id": run_id, "via": via})
    stamp = codec.iso(now)

    def op(db: sqlite3.Connection) -> RetryOutcome:
        row = db.execute(
            "SELECT flow, state, params, logical_date FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return RetryOutcome(None, refused="not_found", detail=f"no run {run_id}")
        flow, state, params, logical = row
        if key is not None:
            found = db.execute(
                "SELECT id FROM runs WHERE flow = ? AND idempotency_key = ?", (flow, key)
            ).fetchone()
            if found is not None:
                return RetryOutcome(int(found[0]), flow=flow)
        refused = _refusal(db, run_id, state)
        if refused is not None:
            return RetryOutcome(None, refused=refused[0], detail=refused[1], flow=flow)
        loaded = resolve(flow, codec.from_json(codec.loads(params)))
        if loaded is None:
            detail = f"flow {flow!r} of run {run_id} is not loaded by the service"
            return RetryOutcome(None, refused="not_loaded", detail=detail, flow=flow)
        resolved, source_hash = loaded
        values = (flow, "queued", codec.encode_str(resolved), trigger, logical, key, run_id,
                  source_hash, stamp, None)  # fmt: skip
        new = db.execute(schema.INSERT_RUN, values).fetchone()
        return RetryOutcome(int(new[0]), created=True, flow=flow)

    outcome: RetryOutcome = await store.writer.submit(op)
    return outcome


def _refusal(db: sqlite3.Connection, run_id: int, state: str) -> tuple[str, str] | None:
    if state == "succeeded":
        return "succeeded", f"run {run_id} succeeded; there is nothing to retry"
    if state not in RETRYABLE:
        return "not_ended", f"run {run_id} is still {state}; retry it once it ended"
    active = db.execute(
        "SELECT id, state FROM runs WHERE retry_of = ? AND state IN ('queued', 'running') "
        "ORDER BY id LIMIT 1",
        (run_id,),
    ).fetchone()
    if active is not None:
        return "retrying", f"run {run_id} is being retried already by run {active[0]} ({active[1]})"
    return None
