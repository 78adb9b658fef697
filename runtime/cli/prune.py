"""CLI: prune — apply ``[history] retention`` once, with or without a running service."""

from __future__ import annotations

import argparse
from datetime import timedelta

import anyio

from runtime import codec
from runtime.cli.output import EXIT_OK, out
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.durations import parse_duration
from runtime.errors import ConfigError, ParamError
from runtime.store import connect_reader, open_store
from runtime.store.prune import Pruned, count_prunable, prune_history, report

MIN_AGE = 60.0  # seconds, as [history] retention


def _retention(args: argparse.Namespace, config: Config) -> float:
    if args.older_than is not None:
        try:
            seconds = parse_duration(args.older_than, what="--older-than")
        except ValueError as exc:
            raise ParamError(str(exc)) from None
        if seconds < MIN_AGE:
            raise ParamError(f"--older-than {args.older_than!r}: must be at least {MIN_AGE:g}s")
        return seconds
    if config.history.retention is None:
        raise ConfigError(
            "no retention configured: set [history] retention (or SLUICEWAY_HISTORY_RETENTION), "
            "or give --older-than DURATION"
        )
    return config.history.retention


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway prune [--older-than D] [--dry-run] [--json]``: delete the runs that ended
    longer ago than the retention, with their tasks, attempts, log lines, events, checks
    and delivered alerts; 0 also when there was nothing to prune."""
    retention = _retention(args, config)
    before = SystemClock().now() - timedelta(seconds=retention)
    cutoff = codec.iso(before)
    assert cutoff is not None
    connect_reader(config.db).close()  # a missing file or a foreign database: refused here
    if args.dry_run:
        conn = connect_reader(config.db)
        try:
            pruned = count_prunable(conn, cutoff)
        finally:
            conn.close()
    else:

        async def prune() -> Pruned:
            async with open_store(
                config.db, interval=config.flush_interval, busy_timeout=config.busy_timeout
            ) as store:
                return await prune_history(store, before)

        pruned = anyio.run(prune)
    if args.json:
        out(codec.pretty({**report(pruned, before), "dry_run": args.dry_run}))
    elif args.dry_run:
        out(f"would prune {pruned.describe()} that ended before {cutoff}")
    else:
        out(f"pruned {pruned.describe()} that ended before {cutoff}")
    return EXIT_OK
