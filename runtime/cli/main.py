"""The ``sluiceway`` command: its parser, and dispatch to the command modules of runtime/cli/."""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from runtime.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err
from runtime.config import Config, configure_logging, load_config
from runtime.errors import ConfigError, ParamError, SluicewayError, StoreError, UnknownFlowError

Handler = Callable[[argparse.Namespace, Config], int]
AddCommand = Callable[[str, str], argparse.ArgumentParser]

# each command is cmd_<command> in runtime/cli/<module>.py, imported when it runs
COMMANDS = {
    "run": "run",
    "retry": "run",
    "validate": "history",
    "flows": "history",
    "runs": "history",
    "show": "history",
    "logs": "history",
    "serve": "serving",
    "next": "serving",
    "pause": "serving",
    "unpause": "serving",
    "trigger": "trigger",
    "cancel": "trigger",
    "backfill": "backfill",
    "files": "files",
    "emit": "emit",
    "alerts": "alerts",
    "test-alert": "alerts",
    "hash-password": "password",
    "prune": "prune",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sluiceway`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging("WARNING")  # for what reading the config says; its level comes next
    try:
        config = load_config(args.config).with_overrides(flows=args.flows, db=args.db)
    except ConfigError as exc:
        err(f"sluiceway: {exc}")
        return EXIT_USAGE
    configure_logging(config.log_level)
    run = handler(args.command)
    try:
        return run(args, config)
    except (UnknownFlowError, ParamError, ConfigError) as exc:
        err(f"sluiceway: {exc}")
        return EXIT_USAGE
    except (StoreError, SluicewayError) as exc:
        err(f"sluiceway: {exc}")
        return EXIT_FAILED
    except sqlite3.Error as exc:  # e.g. a history file damaged or locked by another program
        err(f"sluiceway: {config.db}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


def handler(command: str) -> Handler:
    """The function of *command*, its module imported only now: cold start stays small."""
    found: Handler = getattr(
        importlib.import_module(f"runtime.cli.{COMMANDS[command]}"),
        f"cmd_{command.replace('-', '_')}",
    )
    return found


# --- the parser ---


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(default: Any) -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--flows", type=Path, default=default, help="folder of flow files (SLUICEWAY_FLOWS)"
    )
    common.add_argument("--db", type=Path, default=default, help="SQLite file (SLUICEWAY_DB)")
    common.add_argument(
        "--config", type=Path, default=default, help="config file (default ./sluiceway.toml)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sluiceway",
        description="Orchestrate ETL/ELT flows of async tasks on one box.",
        parents=[_common(None)],
    )
    # The same flags after the command: SUPPRESS, or the subcommand's default None would
    # overwrite a value given before the command (`sluiceway --db x.db runs`).
    common = _common(argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])

    _add_run_commands(add)
    _add_history_commands(add)
    _add_service_commands(add)
    _add_backfill(add)
    _add_event_commands(add)
    _add_alert_commands(add)
    _add_security_commands(add)
    _add_prune(add)
    return parser


def _add_run_commands(add: AddCommand) -> None:
    """run, retry (runtime/cli/run.py)."""
    p = add("run", "Run a flow once in the foreground, with live progress.")
    p.add_argument("flow", help="flow name")
    p.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a flow param"
    )
    p.add_argument("--key", help="idempotency key: a second run with the same key is not made")
    p.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="run a file-triggered flow on this file, as its files() trigger would",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")

    p = add("retry", "Rerun the failed, upstream_failed and cancelled tasks of an ended run.")
    p.add_argument("run_id", type=int)
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")


def _add_history_commands(add: AddCommand) -> None:
    """validate, flows, runs, show, logs (runtime/cli/history.py)."""
    p = add("validate", "Load every flow file and report every problem.")
    p.add_argument("--order", action="store_true", help="print each flow's topological order")

    p = add("flows", "List the loaded flows and their latest run.")
    p.add_argument("--json", action="store_true")

    p = add("runs", "List runs, newest first.")
    p.add_argument("--flow")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = add("show", "Show one run: its tasks with state, attempts, durations and errors.")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")

    p = add("logs", "Print the stored log lines of a run.")
    p.add_argument("run_id", type=int)
    p.add_argument("--task", help="only this task (name, or name[index] for a mapped instance)")


def _add_service_commands(add: AddCommand) -> None:
    """The service and its controls: serve, next, pause, unpause (runtime/cli/serving.py);
    trigger, cancel (runtime/cli/trigger.py)."""
    p = add("serve", "Run the service: schedules, queued runs, recovery, reload (systemd-ready).")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would fire on start, then exit"
    )

    p = add("next", "Preview a flow's next scheduled instants.")
    p.add_argument("flow")
    p.add_argument("-n", type=int, default=10, help="how many (default 10)")
    p.add_argument("--json", action="store_true", help='a list of {"utc": ..., "local": ...}')

    p = add("pause", "Pause a flow: it creates no scheduled runs until unpaused.")
    p.add_argument("flow")
    p = add("unpause", "Unpause a flow; its catch-up policy decides what missed instants run.")
    p.add_argument("flow")

    p = add("trigger", "Queue a run of a flow (the service runs it) and print its id.")
    p.add_argument("flow")
    p.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a flow param"
    )
    p.add_argument("--key", help="idempotency key: the same key never makes a second run")
    p.add_argument("--json", action="store_true")

    p = add("cancel", "Cancel a queued or running run.")
    p.add_argument("run_id", type=int)


def _add_backfill(add: AddCommand) -> None:
    """backfill (runtime/cli/backfill.py)."""
    p = add("backfill", "Create and execute a run for every scheduled instant in a range.")
    p.add_argument("flow")
    p.add_argument("--start", required=True, help="first day or instant (ISO 8601)")
    p.add_argument("--end", required=True, help="last day or instant (ISO 8601, inclusive day)")
    p.add_argument("--dry-run", action="store_true", help="list what would run")
    p.add_argument("--max-active", type=int, default=None, help="most backfill runs at once")
    p.add_argument(
        "--rerun",
        choices=["failed", "all", "none"],
        default="none",
        help="which instants that already have a run to run again (default none)",
    )


def _add_event_commands(add: AddCommand) -> None:
    """files (runtime/cli/files.py), emit (runtime/cli/emit.py)."""
    p = add("files", "Every file a flow's files() trigger sees, and what became of it.")
    p.add_argument("flow")
    p.add_argument("--json", action="store_true")

    p = add("emit", "Send an event: every flow with on_event(NAME) gets a run.")
    p.add_argument("name", help="the event's name")
    p.add_argument("--data", default="{}", help="the event's JSON body (run.trigger.payload)")
    p.add_argument("--key", help="idempotency key: the same key never makes second runs")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")


def _add_alert_commands(add: AddCommand) -> None:
    """alerts, test-alert (runtime/cli/alerts.py)."""
    p = add("alerts", "List alert deliveries (newest first); `alerts resend ID` retries one.")
    p.add_argument("action", nargs="?", choices=["resend"], help="resend a dead letter")
    p.add_argument("id", nargs="?", type=int, help="the delivery to resend")
    p.add_argument("--failed", action="store_true", help="only dead letters and failed tries")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")

    p = add("test-alert", "Send a test alert to a destination now and print the answer.")
    p.add_argument("destination", help="'<plugin>:<name>', e.g. slack:data-team")


def _add_security_commands(add: AddCommand) -> None:
    """hash-password (runtime/cli/password.py)."""
    add(
        "hash-password",
        "Hash a dashboard password (read from the terminal or stdin) for [api] password_hash.",
    )


def _add_prune(add: AddCommand) -> None:
    """prune (runtime/cli/prune.py)."""
    p = add("prune", "Delete runs that ended longer ago than [history] retention, with their rows.")
    p.add_argument(
        "--older-than",
        metavar="DURATION",
        help="instead of [history] retention, e.g. 30d or 12h (at least 60s)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


if __name__ == "__main__":
    sys.exit(main())
