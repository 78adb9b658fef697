"""Upstream-flow (``on_flow``) triggers in the store: which ended upstream runs (or tasks) have
no downstream run yet, and committing those runs together with the trigger's cursor.

A trigger's cursor is the upstream run id up to which every run of the upstream has ended and
been handled. Reads go from the cursor up by the ``runs_by_flow`` index, so a pass costs the
runs above the cursor, not the upstream's history. The downstream run's idempotency key is
the upstream run id (and task), under the runs' unique (flow, key) index: whoever creates it
first, the event path, the periodic reconcile, a restarted service, it exists once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runtime import codec
from runtime.store import schema

if TYPE_CHECKING:
    from runtime.define.flow import Flow
    from runtime.store import Store

__all__ = [
    "Ended",
    "Pending",
    "Watch",
    "fire_upstream",
    "pending",
    "stored_cursors",
    "upstream_key",
]

PASS_LIMIT = 500
"""Most downstream runs one trigger creates per pass; the next pass goes on from there."""

_TERMINAL_RUN = schema.TERMINAL_RUN

_INIT_CURSOR = """
INSERT INTO upstream_cursors (flow, trigger, upstream, cursor, updated_at)
SELECT ?, ?, ?, COALESCE(MAX(id), 0), ? FROM runs WHERE flow = ?
ON CONFLICT (flow, trigger) DO NOTHING
"""

# only forward: a pass that read an older state never moves a cursor back
_ADVANCE_CURSOR = """
UPDATE upstream_cursors SET cursor = ?, updated_at = ?
WHERE flow = ? AND trigger = ? AND cursor < ?
"""


def upstream_key(upstream: str, run_id: int, task: str | None = None) -> str:
    """The downstream run's idempotency key: ``flow:orders:12``, ``flow:orders:12:load``.

    The unique index is on (downstream flow, key): one downstream run per upstream run (and
    task), whichever of a flow's ``on_flow`` triggers on that upstream sees it first."""
    return f"flow:{upstream}:{run_id}" if task is None else f"flow:{upstream}:{run_id}:{task}"


@dataclass(frozen=True, slots=True)
class Watch:
    """One ``on_flow`` trigger of one loaded flow, as the store reads it.

    :ivar flow: the downstream flow (the one that declares the trigger)
    :ivar trigger: the trigger's key, ``str(spec)``: the cursor is stored under it
    :ivar upstream: the upstream flow's name
    :ivar states: the end states that start a downstream run
    :ivar task: the upstream task watched, ``None`` for the whole run
    """

    flow: str
    trigger: str
    upstream: str
    states: tuple[str, ...]
    task: str | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """An upstream run (or its watched task) that ended in a matching state and has no
    downstream run yet.

    :ivar state: the run's state, or the task's for a task trigger
    :ivar logical_date: the upstream run's, as stored (ISO UTC)
    :ivar params: the upstream run's params as stored (JSON; tagged values stay tagged)
    """

    run_id: int
    state: str
    logical_date: str
    params: Any


@dataclass(slots=True)
class Pending:
    """What one pass found for one trigger.

    :ivar cursor: the stored cursor; ``None`` for a trigger seen for the first time (its
        cursor starts at the upstream's newest run: history does not fire)
    :ivar advance_to: where the cursor may move once *ended* is committed: every upstream
        run up to it has ended and, if it matched, is in *ended* or has its run already
    :ivar more: the pass stopped at :data:`PASS_LIMIT`; another one goes on
    """

    watch: Watch
    cursor: int | None
    advance_to: int = 0
    ended: list[Ended] = field(default_factory=list)
    more: bool = False


# --- reads (plain functions on a sqlite3 connection, for ``await store.read(fn)``) ---


def stored_cursors(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """Every stored cursor by (downstream flow, trigger key)."""
    return {
        (flow, trigger): int(cursor)
        for flow, trigger, cursor in conn.execute(
            "SELECT flow, trigger, cursor FROM upstream_cursors"
        )
    }


def pending(
    conn: sqlite3.Connection, watches: Sequence[Watch], limit: int = PASS_LIMIT
) -> list[Pending]:
    """For each of *watches*: its stored cursor, the upstream runs (or tasks) above it that
    ended in a matching state without a downstream run, and how far its cursor may move."""
    return [_pending_one(conn, watch, limit) for watch in watches]


def _pending_one(conn: sqlite3.Connection, watch: Watch, limit: int) -> Pending:
    row = conn.execute(
        "SELECT cursor FROM upstream_cursors WHERE flow = ? AND trigger = ?",
        (watch.flow, watch.trigger),
    ).fetchone()
    if row is None:
        return Pending(watch, None)
    cursor = int(row[0])
    # The bound is read before the runs: a run terminal now stays terminal, so every run up
    # to the bound is seen ended by the read below (one that ends in between is read too,
    # and stays above the cursor until a later pass).
    first_open = conn.execute(
        f"SELECT MIN(id) FROM runs WHERE flow = ? AND id > ? AND state NOT IN {_TERMINAL_RUN}",
        (watch.upstream, cursor),
    ).fetchone()[0]
    if first_open is not None:
        bound = int(first_open) - 1
    else:
        newest = conn.execute(
            "SELECT MAX(id) FROM runs WHERE flow = ?", (watch.upstream,)
        ).fetchone()[0]
        bound = max(cursor, int(newest or 0))
    ended = [
        Ended(int(run_id), state, logical_date, codec.loads(params))
        for run_id, state, logical_date, params in conn.execute(
            _ended_sql(watch), _ended_args(watch, cursor, limit)
        )
    ]
    more = len(ended) == limit
    if more:  # runs past the last one read may still need their downstream run
        bound = min(bound, ended[-1].run_id)
    return Pending(watch, cursor, max(bound, cursor), ended, more)


def _ended_sql(watch: Watch) -> str:
    marks = ", ".join("?" * len(watch.states))
    # the NOT EXISTS is one search of the unique (flow, idempotency_key) index per run
    if watch.task is None:
        return (
            # by flow, from the cursor: runs_by_state would read every flow's runs above it
            "SELECT r.id, r.state, r.logical_date, r.params FROM runs r INDEXED BY runs_by_flow "
            f"WHERE r.flow = ? AND r.id > ? AND r.state IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM runs d WHERE d.flow = ? "
            "AND d.idempotency_key = 'flow:' || r.flow || ':' || r.id) "
            "ORDER BY r.id LIMIT ?"
        )
    return (
        "SELECT r.id, t.state, r.logical_date, r.params FROM runs r "
        "JOIN tasks t ON t.run_id = r.id AND t.name = ? AND t.idx = -1 "
        f"WHERE r.flow = ? AND r.id > ? AND t.state IN ({marks}) "
        "AND NOT EXISTS (SELECT 1 FROM runs d WHERE d.flow = ? "
        "AND d.idempotency_key = 'flow:' || r.flow || ':' || r.id || ':' || t.name) "
        "ORDER BY r.id LIMIT ?"
    )


def _ended_args(watch: Watch, cursor: int, limit: int) -> tuple[Any, ...]:
    head: tuple[Any, ...] = () if watch.task is None else (watch.task,)
    return (*head, watch.upstream, cursor, *watch.states, watch.flow, limit)


# --- the write ---


def trigger_record(watch: Watch, ended: Ended) -> dict[str, Any]:
    """``run.trigger`` of the downstream run: ``{"kind": "flow", "flow", "run_id", "state",
    "logical_date", "params"}``, and ``"task"`` for a task trigger."""
    record: dict[str, Any] = {
        "kind": "flow",
        "flow": watch.upstream,
        "run_id": ended.run_id,
        "state": ended.state,
        "logical_date": ended.logical_date,
        "params": ended.params,
    }
    if watch.task is not None:
        record["task"] = watch.task
    return record


async def fire_upstream(
    store: Store, found: Sequence[tuple[Flow, Pending]], now: datetime
) -> list[tuple[int, Watch, Ended]]:
    """Commit, in one transaction, the downstream runs of what *found* holds and each
    trigger's cursor (started at the upstream's newest run for a trigger seen first, else
    moved forward to ``advance_to``); return the runs created, with what made each.

    A run that already exists (the event path and a reconcile, a restart) is skipped by the
    unique index; a downstream flow that is paused still gets its runs (they wait queued).
    The downstream run's logical date is the upstream run's; its params are the downstream
    flow's defaults (the upstream's are in ``run.trigger.params``).

    :raises StoreError: when the write fails (nothing of it is committed)
    """
    created_at = codec.iso(now)
    inits: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    rows: list[tuple[tuple[Any, ...], Watch, Ended]] = []
    for flow, found_one in found:
        watch = found_one.watch
        if found_one.cursor is None:
            inits.append((watch.flow, watch.trigger, watch.upstream, created_at, watch.upstream))
            continue
        params, source_hash = codec.encode_str(flow.params), flow.source_hash()
        for ended in found_one.ended:
            key = upstream_key(watch.upstream, ended.run_id, watch.task)
            record = codec.dumps_str(trigger_record(watch, ended))
            row = (flow.name, "queued", params, record, ended.logical_date, key, None)
            rows.append(((*row, source_hash, created_at, None), watch, ended))
        if found_one.advance_to > found_one.cursor:
            moves.append(
                (found_one.advance_to, created_at, watch.flow, watch.trigger, found_one.advance_to)
            )

    def op(db: sqlite3.Connection) -> list[tuple[int, Watch, Ended]]:
        made = []
        for row, watch, ended in rows:
            got = db.execute(schema.INSERT_RUN, row).fetchone()
            if got is not None:
                made.append((int(got[0]), watch, ended))
        db.executemany(_INIT_CURSOR, inits)
        db.executemany(_ADVANCE_CURSOR, moves)
        return made

    if not (inits or moves or rows):
        return []
    result: list[tuple[int, Watch, Ended]] = await store.writer.submit(op)
    return result
