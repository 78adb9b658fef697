"""CLI: serve, next, pause, unpause."""

from __future__ import annotations

import argparse
import heapq
from datetime import datetime
from typing import TYPE_CHECKING

from runtime.cli.output import EXIT_FAILED, EXIT_OK, err, load_flow, out
from runtime.config import Config
from runtime.errors import ParamError

if TYPE_CHECKING:
    from runtime.scheduling.agenda import TriggerPlan


def _now() -> datetime:
    from runtime.clock import SystemClock

    return SystemClock().now()


# --- serve ---


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway serve [--dry-run]``."""
    if args.dry_run:
        return _dry_run(config)
    from runtime.config import load_config
    from runtime.service.serve import serve

    def reread() -> Config:  # SIGHUP: the alert routing is read again
        return load_config(args.config).with_overrides(flows=args.flows, db=args.db)

    return serve(config, reread)


def _dry_run(config: Config) -> int:
    """Print what the start-up pass would fire and skip now; write nothing, not even a db."""
    from runtime.define.loader import load_flows
    from runtime.scheduling.agenda import plan_flows
    from runtime.store import connect_reader
    from runtime.store.cursors import ScheduleState, read_state

    loaded = load_flows(config.flows, config.pools, executors=config.executors)
    for problem in loaded.problems:
        err(problem)
    state = ScheduleState()
    if config.db.exists():
        conn = connect_reader(config.db)
        try:
            state = read_state(conn)
        finally:
            conn.close()
        where = f"database {config.db}"
    else:
        where = f"no database at {config.db} yet: every trigger is new"
    now = _now()
    plans = plan_flows(loaded.flows, state, now)
    scheduled = {p.flow.name for p in plans}
    out(f"serve --dry-run at {_iso(now)}: {len(scheduled)} scheduled flow(s) in {config.flows}")
    out(f"  {where}; nothing is written")
    for plan in plans:
        out("")
        for line in _describe(plan):
            out(line)
    if not plans:
        out("no flow has time triggers: nothing would fire")
    return EXIT_OK


def _describe(p: TriggerPlan) -> list[str]:
    from runtime.scheduling.firetimes import to_local

    tz = p.flow.tz

    def show(instant: datetime | None) -> str:
        if instant is None:
            return "-"
        return f"{to_local(instant, tz).isoformat()} ({_iso(instant)})"

    plan = p.plan
    last = "none (new trigger)" if p.last is None else show(p.last)
    lines = [
        f"{p.flow.name}  {p.key}  catchup={p.flow.catchup} max_catchup={p.flow.max_catchup}",
        f"  cursor: {last}",
    ]
    if p.paused:
        lines.append("  paused: fires nothing; the cursor stays (unpause to catch up)")
        return lines
    if plan.fire:
        lines.append(f"  would fire {len(plan.fire)} run(s):")
        lines.extend(f"    {show(instant)}" for instant in plan.fire)
    else:
        lines.append("  would fire nothing now")
    if plan.skipped:
        lines.append(
            f"  would skip {plan.skipped} missed instant(s): "
            f"{show(plan.first_skipped)} .. {show(plan.last_skipped)}"
        )
    lines.append(f"  next: {show(plan.next)}")
    return lines


def _iso(instant: datetime) -> str:
    from runtime.scheduling.firetimes import iso_utc

    return iso_utc(instant)


# --- next ---


def cmd_next(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway next FLOW [-n 10] [--json]``: the next fire instants of all its triggers."""
    from runtime import codec
    from runtime.scheduling.agenda import triggers
    from runtime.scheduling.firetimes import instant_json, to_local
    from runtime.scheduling.planner import preview

    if args.n < 1:
        raise ParamError(f"-n must be at least 1, not {args.n}")
    flow = load_flow(config, args.flow)
    if not flow.time_triggers:
        err(
            f"sluiceway: flow {flow.name!r} has no time triggers, so it never fires by itself "
            "(add triggers=[cron(...)] or [every(...)] to its Flow)"
        )
        return EXIT_FAILED
    now = _now()
    keyed = [
        [(t, str(spec)) for t in preview(spec, now, args.n)] for spec in triggers(flow).values()
    ]
    upcoming = list(heapq.merge(*keyed, key=lambda item: item[0]))[: args.n]
    if args.json:
        out(codec.pretty([instant_json(instant, flow.tz) for instant, _ in upcoming]))
        return EXIT_OK
    width = max(len(to_local(instant, flow.tz).isoformat()) for instant, _ in upcoming)
    out(f"{'LOCAL (' + flow.tz + ')':<{width}}  {'UTC':<20}  TRIGGER")
    for instant, key in upcoming:
        out(f"{to_local(instant, flow.tz).isoformat():<{width}}  {_iso(instant):<20}  {key}")
    return EXIT_OK


# --- pause, unpause ---


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway pause FLOW``."""
    return _set_paused(config, args.flow, paused=True)


def cmd_unpause(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway unpause FLOW``."""
    return _set_paused(config, args.flow, paused=False)


def _set_paused(config: Config, name: str, *, paused: bool) -> int:
    import anyio

    from runtime.store import open_store
    from runtime.store.cursors import set_paused

    flow = load_flow(config, name)
    now = _now()

    async def main() -> bool:
        async with open_store(config.db) as store:
            return await set_paused(store, flow.name, paused, now)

    changed = anyio.run(main)
    if paused:
        out(
            f"paused flow {flow.name!r}: it creates no scheduled runs until unpaused"
            if changed
            else f"flow {flow.name!r} was already paused"
        )
    elif changed:
        out(
            f"unpaused flow {flow.name!r}: missed instants follow catchup={flow.catchup!r} "
            f"(max_catchup={flow.max_catchup})"
        )
    else:
        out(f"flow {flow.name!r} was not paused")
    return EXIT_OK
