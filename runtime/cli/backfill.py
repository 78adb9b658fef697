"""CLI: backfill — a run for every scheduled instant in a range, idempotent with the schedule."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import anyio

from runtime import codec
from runtime.cli.main import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    out,
)
from runtime.cli.trigger import _flow
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.triggers import CronTrigger, EveryTrigger, TimeTrigger, load_zone
from runtime.errors import ParamError, SluicewayError, StoreError
from runtime.scheduling.firetimes import to_local
from runtime.scheduling.planner import instants_between
from runtime.store import Store, connect_reader, open_store
from runtime.store.lock import DatabaseLock
from runtime.store.requests import (
    latest_reruns,
    runs_by_keys,
    service_running,
)


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
    from runtime.store.cursors import run_key

    return run_key(instant)


def scheduled_instants(
    specs: Sequence[TimeTrigger], start: datetime, end: datetime
) -> dict[datetime, list[tuple[str, str]]]:
    """Each fire instant in ``[start, end)`` of any of *specs*, oldest first, with the
    ``(spec, key)`` of every spec firing then (the first one names a new run)."""
    merged: dict[datetime, list[tuple[str, str]]] = {}
    for spec in specs:
        for instant in instants_between(spec, start, end):
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


def _bound(text: str, option: str, zone: tzinfo, *, end: bool) -> datetime:
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


def _describe(item: Item, tz: str) -> str:
    local = to_local(item.instant, tz).isoformat()
    run = f"run {item.run['id']} {item.run['state']}" if item.run else ""
    return f"  {item.action:<6} {local}  {run}".rstrip()


# --- backfill: doing ---


def cmd_backfill(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway backfill FLOW --start D --end D [--dry-run] [--max-active N] [--rerun R]``."""
    flow = _flow(config, args.flow)
    if flow is None:
        return EXIT_USAGE
    specs = [t for t in flow.triggers if isinstance(t, CronTrigger | EveryTrigger)]
    if not specs:
        err(f"sluiceway: flow {flow.name!r} has no time triggers (cron or every) to backfill")
        return EXIT_USAGE
    if args.max_active is not None and args.max_active < 1:
        raise ParamError(f"--max-active must be at least 1, not {args.max_active}")
    zone = load_zone(flow.tz)
    start = _bound(args.start, "--start", zone, end=False)
    end = _bound(args.end, "--end", zone, end=True)
    if start >= end:
        raise ParamError(f"--start {args.start!r} is after --end {args.end!r}")
    instants = scheduled_instants(specs, start, end)
    items = plan_backfill(instants, _newest_runs(config, flow.name, instants), args.rerun)
    todo = [item for item in items if item.action != "skip"]
    skipped = len(items) - len(todo)
    out(
        f"backfill {flow.name}: {len(items)} scheduled instant(s) from {args.start} to "
        f"{args.end} inclusive ({flow.tz})"
    )
    for item in items:
        if args.dry_run or item.action == "skip":
            out(_describe(item, flow.tz))
    if args.dry_run:
        where = "the running service" if service_running(config.db) else "this process"
        counts = {a: sum(i.action == a for i in items) for a in ("run", "retry", "rerun")}
        out(
            f"dry run: {counts['run']} to run, {counts['retry']} to retry, "
            f"{counts['rerun']} to rerun, {skipped} skipped; {where} would run them"
        )
        return EXIT_OK
    if not todo:
        out(f"backfill {flow.name}: nothing to run; {skipped} skipped")
        return EXIT_OK
    if not config.db.parent.is_dir():
        raise StoreError(f"{config.db}: folder {config.db.parent} does not exist")
    # Holding the service's lock while running here: a service started meanwhile would claim
    # these runs as its own queued or orphaned runs. Held by a service: queue for it instead.
    lock = DatabaseLock(config.db)
    try:
        lock.acquire()
    except StoreError:
        return _queue(config, flow, todo, skipped, args.max_active)
    try:
        return _execute(config, flow, todo, skipped, args.max_active or flow.max_active_runs or 1)
    finally:
        lock.release()


def _newest_runs(
    config: Config, flow: str, instants: Mapping[datetime, Sequence[tuple[str, str]]]
) -> dict[str, dict[str, Any]]:
    """The newest run (following retries and reruns) of every key that has a run."""
    if not config.db.exists():
        return {}
    conn = connect_reader(config.db)
    try:
        keyed = runs_by_keys(conn, flow, (k for specs in instants.values() for _, k in specs))
        newer = latest_reruns(conn, flow, [run["id"] for run in keyed.values()])
    finally:
        conn.close()
    return {key: newer.get(run["id"], run) for key, run in keyed.items()}


def _params(flow: Flow, item: Item) -> dict[str, Any]:
    """A redo keeps the params of the run it redoes (those the flow still declares)."""
    old = codec.from_json(item.run["params"]) if item.run else {}  # stored as codec.encode
    return flow.resolve_params({k: v for k, v in old.items() if k in flow.params})


def _trigger(item: Item) -> dict[str, Any]:
    if item.action == "run":
        scheduled = codec.iso(item.instant)
        return {"kind": "backfill", "spec": item.schedule, "scheduled": scheduled, "via": "cli"}
    assert item.run is not None
    if item.action == "retry":
        return {"kind": "retry", "run_id": item.run["id"]}
    return {"kind": "backfill", "rerun_of": item.run["id"], "via": "cli"}


def _queue(
    config: Config, flow: Flow, todo: Sequence[Item], skipped: int, max_active: int | None
) -> int:
    """Commit the runs queued for the service that holds the database, and print them."""
    if max_active is not None:
        err("note: --max-active is not used: the service applies the flow's max_active_runs")
    now = SystemClock().now()

    async def queue(store: Store) -> list[tuple[Item, int, bool]]:
        made = []
        for item in todo:
            run_id, created = await store.create_run(
                flow=flow.name,
                params=_params(flow, item),
                trigger=_trigger(item),
                logical_date=item.instant,
                created_at=now,
                key=item.key if item.action == "run" else None,
                retry_of=item.run["id"] if item.action == "retry" and item.run else None,
                source_hash=flow.source_hash(),
            )
            made.append((item, run_id, created))
        return made

    async def main() -> list[tuple[Item, int, bool]]:
        async with open_store(config.db, interval=config.flush_interval) as store:
            return await queue(store)

    queued = 0
    for item, run_id, created in anyio.run(main):
        local = to_local(item.instant, flow.tz).isoformat()
        if created:
            queued += 1
            out(f"  queued run {run_id} ({item.action}) {local}")
        else:
            skipped += 1
            out(f"  skip   {local}  run {run_id} (made meanwhile)")
    out(
        f"backfill {flow.name}: queued {queued} run(s) for the service on {config.db}; "
        f"{skipped} skipped"
    )
    return EXIT_OK


def _execute(
    config: Config, flow: Flow, todo: Sequence[Item], skipped: int, max_active: int
) -> int:
    """Run *todo* here, at most *max_active* at once, with a progress bar on stderr."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

    from runtime.engine.events import EventBus
    from runtime.engine.handle import RunHandle
    from runtime.engine.runner import open_runner
    from runtime.scheduling.sla import run_sla_monitor

    if config.log_level != "DEBUG":
        # the bar and the result lines say what the engine's own log lines would
        logging.getLogger("sluiceway.runtime").setLevel(logging.ERROR)
        logging.getLogger("sluiceway.task").setLevel(logging.WARNING)
    counts = {"succeeded": 0, "failed": 0, "cancelled": 0}
    state = {"stopping": False, "interrupted": False}
    pending = iter(todo)
    handles: set[RunHandle] = set()
    # the bar redraws itself with carriage returns: only on a terminal; into a pipe or a log
    # file each run is one plain line (with the count the bar would show)
    live = sys.stderr.isatty()
    bar = tqdm(
        total=len(todo),
        desc=f"backfill {flow.name}",
        unit="run",
        file=sys.stderr,
        disable=not live,
    )

    def say(line: str) -> None:
        if live:
            bar.write(line, file=sys.stdout)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def report(item: Item, run_id: int | None, outcome: str) -> None:
        counts[outcome if outcome in counts else "failed"] += 1
        local = to_local(item.instant, flow.tz).isoformat()
        what = f"run {run_id}" if run_id is not None else "no run"
        line = f"  {item.action:<6} {local}  {what} {outcome}"
        say(line if live else f"{line}  [{sum(counts.values())}/{len(todo)}]")
        bar.set_postfix_str(f"{counts['succeeded']} ok, {counts['failed']} failed", refresh=False)
        bar.update(1)

    async def main() -> None:
        bus = EventBus()
        async with open_runner(config, bus=bus) as runner, anyio.create_task_group() as tg:
            lookup = {flow.name: flow}.get
            await tg.start(run_sla_monitor, bus, runner.store, runner.clock, lookup)

            async def one(item: Item, handle: RunHandle) -> None:
                try:
                    if item.action == "retry":
                        assert item.run is not None
                        result = await runner.retry(flow, item.run["id"], handle=handle)
                    else:
                        result = await runner.run(
                            flow,
                            _params(flow, item),
                            trigger=_trigger(item),
                            logical_date=item.instant,
                            key=item.key if item.action == "run" else None,
                            handle=handle,
                        )
                except SluicewayError as exc:  # one run cannot start; the others go on
                    report(item, None, f"failed: {exc}")
                else:
                    report(item, result.id, str(result.state))

            async def worker() -> None:
                for item in pending:  # one shared iterator: each item is taken once
                    if state["stopping"]:
                        return
                    handle = RunHandle()
                    handles.add(handle)
                    try:
                        await one(item, handle)
                    finally:
                        handles.discard(handle)

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        state["interrupted"] = True
                        if state["stopping"]:
                            tg.cancel_scope.cancel()
                            return
                        state["stopping"] = True
                        say("stopping: cancelling the running runs (again: at once)")
                        for handle in list(handles):
                            handle.cancel()

            tg.start_soon(on_signals, name="signals")
            async with anyio.create_task_group() as workers:
                for number in range(min(max_active, len(todo))):
                    workers.start_soon(worker, name=f"backfill worker {number}")
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        bar.close()
    ran = sum(counts.values())
    late = f"; {len(todo) - ran} not started" if ran < len(todo) else ""
    out(
        f"backfill {flow.name}: {ran} run(s): {counts['succeeded']} succeeded, "
        f"{counts['failed']} failed, {counts['cancelled']} cancelled; {skipped} skipped{late}"
    )
    if state["interrupted"]:
        return EXIT_CANCELLED
    return EXIT_OK if counts["succeeded"] == len(todo) else EXIT_FAILED
