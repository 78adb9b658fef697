"""Backfill: the scheduled instants of a range, what to do about each (run, skip, retry,
rerun), and queuing those runs for the service in one transaction. ``sluiceway backfill``
and ``POST /api/flows/{flow}/backfill`` share it."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from itertools import islice
from typing import Any

from runtime import codec
from runtime.define.flow import Flow
from runtime.define.triggers import CronTrigger, EveryTrigger, TimeTrigger
from runtime.errors import ParamError
from runtime.scheduling.firetimes import to_local
from runtime.scheduling.planner import instants_between
from runtime.store import Store, schema
from runtime.store.cursors import run_key
from runtime.store.requests import latest_reruns, runs_by_keys


@dataclass(frozen=True, slots=True)
class Item:
    """One scheduled instant of a backfill and what to do about it.

    :ivar action: ``run`` (no run yet), ``skip``, ``retry`` (its newest run failed or was
        cancelled) or ``rerun`` (its newest run succeeded; ``--rerun all``)
    :ivar run: the instant's newest run (``id``, ``state``, ``params``), when it has one
    """

    instant: datetime
    key: str
    schedule: str
    action: str
    run: Mapping[str, Any] | None = None


def schedule_key(instant: datetime) -> str:
    """The idempotency key of the scheduled run at *instant*, whichever trigger fired: the
    scheduler (``runtime.store.cursors``) makes the same, so a backfilled instant is never
    scheduled again, nor a scheduled one backfilled."""
    return run_key(instant)


def time_triggers(flow: Flow) -> list[TimeTrigger]:
    """The triggers of *flow* a backfill follows (cron and every)."""
    return [t for t in flow.triggers if isinstance(t, CronTrigger | EveryTrigger)]


def scheduled_instants(
    specs: Sequence[TimeTrigger], start: datetime, end: datetime, limit: int | None = None
) -> dict[datetime, list[tuple[str, str]]]:
    """Each fire instant in ``[start, end)`` of any of *specs*, oldest first, with the
    ``(spec, key)`` of every spec firing then (the first one names a new run).

    :param limit: read at most this many instants + 1 per spec (a caller refusing a range
        with more than *limit* instants need not compute millions first)
    """
    merged: dict[datetime, list[tuple[str, str]]] = {}
    for spec in specs:
        found = instants_between(spec, start, end)
        if limit is not None:
            found = islice(found, limit + 1)
        for instant in found:
            merged.setdefault(instant, []).append((str(spec), schedule_key(instant)))
    return dict(sorted(merged.items()))


def plan_backfill(
    instants: Mapping[datetime, Sequence[tuple[str, str]]],
    newest: Mapping[str, Mapping[str, Any]],
    rerun: str,
) -> list[Item]:
    """Decide per instant; *newest* maps a schedule key to the newest run of its instant."""
    items = []
    for instant, specs in instants.items():
        schedule, key = specs[0]
        run = next((newest[k] for _, k in specs if k in newest), None)
        action = "run"
        if run is not None:
            state = run["state"]
            if state in ("failed", "cancelled") and rerun in ("failed", "all"):
                action = "retry"
            elif state == "succeeded" and rerun == "all":
                action = "rerun"
            else:
                action = "skip"
        items.append(Item(instant, key, schedule, action, run))
    return items


def parse_bound(text: str, option: str, zone: tzinfo, *, end: bool) -> datetime:
    """A date (the whole day, in *zone*) or an ISO date-time (in *zone* when naive)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day + timedelta(days=1) if end else day, time(0), zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError(
            f"{option} {text!r}: not a date or date-time (like 2026-01-31 or 2026-01-31T02:00)"
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=zone)
    return moment + timedelta(microseconds=1) if end else moment  # an instant end is inclusive


def describe(item: Item, tz: str) -> str:
    local = to_local(item.instant, tz).isoformat()
    run = f"run {item.run['id']} {item.run['state']}" if item.run else ""
    return f"  {item.action:<6} {local}  {run}".rstrip()


def redo_params(flow: Flow, item: Item) -> dict[str, Any]:
    """A redo keeps the params of the run it redoes (those the flow still declares)."""
    old = codec.from_json(item.run["params"]) if item.run else {}  # stored as codec.encode
    return flow.resolve_params({k: v for k, v in old.items() if k in flow.params})


def run_trigger(item: Item, via: str = "cli") -> dict[str, Any]:
    """The trigger record of the run made for *item* (``run.trigger``)."""
    if item.action == "run":
        scheduled = codec.iso(item.instant)
        return {"kind": "backfill", "spec": item.schedule, "scheduled": scheduled, "via": via}
    assert item.run is not None
    if item.action == "retry":
        return {"kind": "retry", "run_id": item.run["id"]}
    return {"kind": "backfill", "rerun_of": item.run["id"], "via": via}


def newest_runs(
    conn: sqlite3.Connection, flow: str, instants: Mapping[datetime, Sequence[tuple[str, str]]]
) -> dict[str, dict[str, Any]]:
    """The newest run (following retries and reruns) of every schedule key of *instants*
    that has a run (a read function: :meth:`Store.read` or a reader connection)."""
    keyed = runs_by_keys(conn, flow, (k for specs in instants.values() for _, k in specs))
    newer = latest_reruns(conn, flow, [run["id"] for run in keyed.values()])
    return {key: newer.get(run["id"], run) for key, run in keyed.items()}


async def queue_items(
    store: Store, flow: Flow, items: Sequence[Item], now: datetime, via: str = "cli"
) -> list[tuple[Item, int, bool]]:
    """Commit a queued run for each of *items* (none skipped) in one transaction, for the
    service to execute: ``(item, run_id, created)`` each. A new instant is keyed by its
    schedule key, so a run made meanwhile (the scheduler, another backfill) is found, not
    duplicated (``created`` False)."""
    rows = [
        (
            item,
            (
                flow.name,
                "queued",
                codec.encode_str(redo_params(flow, item)),
                codec.dumps_str(run_trigger(item, via)),
                codec.iso(item.instant),
                item.key if item.action == "run" else None,
                item.run["id"] if item.action == "retry" and item.run else None,
                flow.source_hash(),
                codec.iso(now),
                None,
            ),
        )
        for item in items
    ]

    def op(db: sqlite3.Connection) -> list[tuple[Item, int, bool]]:
        made = []
        for item, row in rows:
            got = db.execute(schema.INSERT_RUN, row).fetchone()
            if got is not None:
                made.append((item, int(got[0]), True))
                continue
            (existing,) = db.execute(
                "SELECT id FROM runs WHERE flow = ? AND idempotency_key = ?", (flow.name, row[5])
            ).fetchone()
            made.append((item, int(existing), False))
        return made

    result: list[tuple[Item, int, bool]] = await store.writer.submit(op)
    return result
