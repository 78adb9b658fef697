"""CLI: alerts (the outbox's deliveries), alerts resend ID, test-alert DESTINATION."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from runtime import codec
from runtime.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.errors import ConfigError, ParamError
from runtime.redact import redact


def cmd_alerts(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway alerts [--failed] [--json] [--limit N]``; ``sluiceway alerts resend ID``."""
    if args.action == "resend":
        return _resend(args, config)
    if args.id is not None:
        raise ParamError(f"unexpected argument {args.id}: did you mean `alerts resend {args.id}`?")
    if args.limit < 1:
        raise ParamError("--limit must be at least 1")
    from runtime.store import connect_reader, outbox

    conn = connect_reader(config.db)
    try:
        rows = outbox.list_deliveries(conn, failed=args.failed, limit=args.limit)
    finally:
        conn.close()
    if args.json:
        out(redact(codec.pretty([row.as_json() for row in rows])))
        return EXIT_OK
    if not rows:
        err("no alert deliveries" + (" failed" if args.failed else ""))
        return EXIT_OK
    out(
        f"{'ID':>6}  {'EVENT':<16} {'FLOW':<16} {'RUN':>5}  {'DESTINATION':<22} {'STATE':<9} "
        f"TRIES  {'WHEN (UTC)':<19}  LAST ERROR"
    )
    for row in rows:
        run = str(row.run_id) if row.run_id is not None else "-"
        line = (
            f"{row.id:>6}  {row.event:<16} {row.flow or '-':<16} {run:>5}  "
            f"{row.destination:<22} {row.state:<9} {row.attempts:>5}"
        )
        when = row.delivered_at or row.created_at
        line += f"  {when[:19].replace('T', ' ')}"
        if row.state != "delivered" and row.last_error:
            line += f"  {row.last_error}"
        out(redact(line))
    return EXIT_OK


def _resend(args: argparse.Namespace, config: Config) -> int:
    from runtime.store import connect_reader, open_store, outbox

    if args.id is None:
        raise ParamError("alerts resend needs the id of a dead letter (see `alerts --failed`)")
    connect_reader(config.db).close()  # a missing database is an error, not a new file
    row_id: int = args.id
    now = SystemClock().now().timestamp()

    async def resend() -> str | None:
        async with open_store(config.db, interval=config.flush_interval) as store:
            why: str | None = await store.writer.submit(lambda db: outbox.resend(db, row_id, now))
            return why

    why = anyio.run(resend)
    if why is not None:
        err(f"sluiceway: {why}")
        return EXIT_USAGE
    err(f"alert delivery {row_id} is pending again; the service sends it now")
    return EXIT_OK


def cmd_test_alert(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway test-alert DESTINATION``: send a test alert now through its notifier and
    print the answer; exit 1 with the (redacted) error when it fails."""
    from runtime.service.alert_events import make_alert
    from runtime.service.alerts import make_notifier

    dest: str = args.destination
    if dest not in config.notifiers:
        known = ", ".join(sorted(config.notifiers)) or "none"
        raise ParamError(f"unknown destination {dest!r} (configured: {known})")
    where = f"{config.source}: [notifiers.{dest.replace(':', '.')}]"
    unusable = [p for p in config.notifier_problems if where in p]
    if unusable:
        raise ConfigError(unusable[0])
    notifier = make_notifier(dest, config.notifiers[dest], where)
    alert: dict[str, Any] = make_alert(
        "service.started",
        f"test alert from sluiceway to {dest}",
        SystemClock().now(),
        kind="test",
    )
    alert["id"] = f"sluiceway-test-{int(SystemClock().now().timestamp())}"

    async def send() -> str:
        with anyio.fail_after(config.alert_timeout):
            return await notifier.send(alert)

    try:
        answer = anyio.run(send)
    except TimeoutError:
        err(f"sluiceway: {dest}: no answer within {config.alert_timeout:g}s")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - any failure of the plugin is the answer
        err(redact(f"sluiceway: {dest}: {type(exc).__name__}: {exc}"))
        return EXIT_FAILED
    out(redact(f"{dest}: {answer}"))
    return EXIT_OK
