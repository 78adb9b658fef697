"""CLI: backfill — a run for every scheduled instant in a range, idempotent with the schedule.

What to do about each instant is decided in :mod:`runtime.scheduling.backfill`; this module
does it: queues the runs for a running service, or runs them here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from runtime.cli.output import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    out,
    valid_flow,
)
from runtime.cli.signals import run_ctrl_c
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.triggers import load_zone
from runtime.errors import ParamError, SluicewayError, StoreError
from runtime.scheduling.backfill import (
    Item,
    describe,
    newest_runs,
    parse_bound,
    plan_backfill,
    queue_items,
    redo_params,
    run_trigger,
    scheduled_instants,
    time_triggers,
)
from runtime.scheduling.firetimes import to_local
from runtime.store import connect_reader, open_store
from runtime.store.lock import DatabaseLock, service_running

if TYPE_CHECKING:
    from runtime.engine.handle import RunHandle
    from runtime.engine.runner import Runner


def cmd_backfill(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway backfill FLOW --start D --end D [--dry-run] [--max-active N] [--rerun R]``."""
    flow = valid_flow(config, args.flow)
    if flow is None:
        return EXIT_USAGE
    specs = time_triggers(flow)
    if not specs:
        err(f"sluiceway: flow {flow.name!r} has no time triggers (cron or every) to backfill")
        return EXIT_USAGE
    if args.max_active is not None and args.max_active < 1:
        raise ParamError(f"--max-active must be at least 1, not {args.max_active}")
    zone = load_zone(flow.tz)
    start = parse_bound(args.start, "--start", zone, end=False)
    end = parse_bound(args.end, "--end", zone, end=True)
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
            out(describe(item, flow.tz))
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
        return newest_runs(conn, flow, instants)
    finally:
        conn.close()


def _queue(
    config: Config, flow: Flow, todo: Sequence[Item], skipped: int, max_active: int | None
) -> int:
    """Commit the runs queued for the service that holds the database, and print them."""
    if max_active is not None:
        err("note: --max-active is not used: the service applies the flow's max_active_runs")
    now = SystemClock().now()

    async def main() -> list[tuple[Item, int, bool]]:
        async with open_store(config.db, interval=config.flush_interval) as store:
            return await queue_items(store, flow, todo, now)

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
    if config.log_level != "DEBUG":
        # the bar and the result lines say what the engine's own log lines would
        logging.getLogger("sluiceway.runtime").setLevel(logging.ERROR)
        logging.getLogger("sluiceway.task").setLevel(logging.WARNING)
    backfill = _Backfill(config, flow, todo, max_active)
    try:
        anyio.run(backfill.run)
    finally:
        backfill.bar.close()
    return backfill.summary(skipped)


class _Backfill:
    """The runs of a backfill executed in this process, and what Ctrl-C does to them.

    Each ended run is a line on stdout; on a terminal a progress bar on stderr counts them.
    The first Ctrl-C cancels the running runs and starts no more, a second stops at once.
    """

    def __init__(self, config: Config, flow: Flow, todo: Sequence[Item], max_active: int) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

        self.config = config
        self.flow = flow
        self.todo = todo
        self.max_active = max_active
        self.counts = {"succeeded": 0, "failed": 0, "cancelled": 0}
        self.pending = iter(todo)  # one shared iterator: each item is taken once
        self.handles: set[RunHandle] = set()
        self.stopping = False  # the first Ctrl-C: no more runs start
        self.interrupted = False  # a Ctrl-C came: the exit code says cancelled
        self.scope: anyio.CancelScope | None = None  # what a second Ctrl-C cancels
        # the bar redraws itself with carriage returns: only on a terminal; into a pipe or a
        # log file each run is one plain line (with the count the bar would show)
        self.live = sys.stderr.isatty()
        self.bar = tqdm(
            total=len(todo),
            desc=f"backfill {flow.name}",
            unit="run",
            file=sys.stderr,
            disable=not self.live,
        )

    def say(self, line: str) -> None:
        if self.live:
            self.bar.write(line, file=sys.stdout)
        else:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def report(self, item: Item, run_id: int | None, outcome: str) -> None:
        counts = self.counts
        counts[outcome if outcome in counts else "failed"] += 1
        local = to_local(item.instant, self.flow.tz).isoformat()
        what = f"run {run_id}" if run_id is not None else "no run"
        line = f"  {item.action:<6} {local}  {what} {outcome}"
        self.say(line if self.live else f"{line}  [{sum(counts.values())}/{len(self.todo)}]")
        self.bar.set_postfix_str(
            f"{counts['succeeded']} ok, {counts['failed']} failed", refresh=False
        )
        self.bar.update(1)

    def stop(self) -> None:
        """The first Ctrl-C: cancel the running runs, start no more."""
        self.interrupted = self.stopping = True
        self.say("stopping: cancelling the running runs (again: at once)")
        for handle in list(self.handles):
            handle.cancel()

    def stop_now(self) -> None:
        """Every later Ctrl-C."""
        self.interrupted = True
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        from runtime.engine.events import EventBus
        from runtime.engine.runner import open_runner
        from runtime.scheduling.sla import run_sla_monitor

        bus = EventBus()
        async with open_runner(self.config, bus=bus) as runner, anyio.create_task_group() as tg:
            self.scope = tg.cancel_scope
            lookup = {self.flow.name: self.flow}.get
            await tg.start(run_sla_monitor, bus, runner.store, runner.clock, lookup)
            await tg.start(run_ctrl_c, self.stop, self.stop_now, name="signals")
            async with anyio.create_task_group() as workers:
                for number in range(min(self.max_active, len(self.todo))):
                    workers.start_soon(self._worker, runner, name=f"backfill worker {number}")
            tg.cancel_scope.cancel()

    async def _worker(self, runner: Runner) -> None:
        from runtime.engine.handle import RunHandle

        for item in self.pending:
            if self.stopping:
                return
            handle = RunHandle()
            self.handles.add(handle)
            try:
                await self._one(runner, item, handle)
            finally:
                self.handles.discard(handle)

    async def _one(self, runner: Runner, item: Item, handle: RunHandle) -> None:
        flow = self.flow
        try:
            if item.action == "retry":
                assert item.run is not None
                result = await runner.retry(flow, item.run["id"], handle=handle)
            else:
                result = await runner.run(
                    flow,
                    redo_params(flow, item),
                    trigger=run_trigger(item),
                    logical_date=item.instant,
                    key=item.key if item.action == "run" else None,
                    handle=handle,
                )
        except SluicewayError as exc:  # one run cannot start; the others go on
            self.report(item, None, f"failed: {exc}")
        else:
            self.report(item, result.id, str(result.state))

    def summary(self, skipped: int) -> int:
        """Print the totals; the exit code."""
        counts, todo = self.counts, self.todo
        ran = sum(counts.values())
        late = f"; {len(todo) - ran} not started" if ran < len(todo) else ""
        out(
            f"backfill {self.flow.name}: {ran} run(s): {counts['succeeded']} succeeded, "
            f"{counts['failed']} failed, {counts['cancelled']} cancelled; {skipped} skipped{late}"
        )
        if self.interrupted:
            return EXIT_CANCELLED
        return EXIT_OK if counts["succeeded"] == len(todo) else EXIT_FAILED
