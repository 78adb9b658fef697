"""The ``sluiceway`` command: run, retry, validate, flows, runs, show, logs."""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from runtime import codec
from runtime.config import Config, configure_logging, load_config
from runtime.errors import ConfigError, ParamError, SluicewayError, StoreError, UnknownFlowError

if TYPE_CHECKING:
    import asyncio

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
CANCEL_POLL = 0.5  # how soon `sluiceway cancel` reaches a run in the foreground
PROGRESS_EVERY = 0.05  # the run's progress lines are written in batches this often


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


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

    p = add("run", "Run a flow once in the foreground, with live progress.")
    p.add_argument("flow", help="flow name")
    p.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V", help="override a flow param"
    )
    p.add_argument("--key", help="idempotency key: a second run with the same key is not made")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")

    p = add("retry", "Rerun the failed, upstream_failed and cancelled tasks of an ended run.")
    p.add_argument("run_id", type=int)
    p.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")

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

    # --- the service and its controls (runtime/commands/) ---
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
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config).with_overrides(flows=args.flows, db=args.db)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sluiceway`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging("WARNING")  # for what reading the config says; its level comes next
    try:
        config = _config(args)
    except ConfigError as exc:
        err(f"sluiceway: {exc}")
        return EXIT_USAGE
    configure_logging(config.log_level)
    command = args.command
    handler = _COMMANDS.get(command) or _lazy(_LAZY[command], f"cmd_{command}")
    try:
        return handler(args, config)
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


# --- running ---


def parse_params(pairs: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``k=v`` pairs, each converted to the type of the param's default."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ParamError(f"--param {pair!r}: expected KEY=VALUE")
        out[key] = _coerce(key, text, defaults.get(key))
    return out


def _coerce(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list | dict):
            value = _json(text)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a JSON {type(default).__name__}")
            return value
        if default is None:
            try:
                return _json(text)
            except ValueError:
                return text
    except ValueError as exc:
        raise ParamError(f"--param {key}={text!r}: {exc}") from None
    return text


def _json(text: str) -> Any:
    """JSON as written: a long integer stays an integer (orjson would read a float); NaN and
    Infinity are not JSON."""
    import json

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    def number(token: str) -> float:
        value = float(token)
        if value - value != 0.0:
            raise ValueError(f"{token} is out of range")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=number)


def load_flow(config: Config, name: str) -> Any:
    from runtime.define.loader import load_flows
    from runtime.errors import FlowValidationError

    loaded = load_flows(config.flows, config.pools)
    if name in loaded.broken:
        own = [p for p in loaded.problems if repr(name) in p] or loaded.problems
        raise FlowValidationError(f"flow {name!r}", own)
    if name not in loaded.flows:
        if loaded.problems:
            for problem in loaded.problems:
                err(problem)
        raise UnknownFlowError(name, list(loaded.flows))
    for problem in loaded.problems:
        err(f"warning: {problem}")
    return loaded.flows[name]


class _Progress:
    """Live lines on stderr: each task start and end, with a done/total count.

    Lines are written in batches at most every 50 ms: a write and flush per line cost more
    than running the task itself for a flow of 10,000 small tasks.
    """

    def __init__(self, total: int, quiet: bool) -> None:
        import threading

        self.total = total
        self.done = 0
        self.quiet = quiet
        self.lines: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.lock = threading.Lock()  # run.log lines of `def` tasks come from threads

    def emit(self, line: str) -> None:
        import asyncio

        with self.lock:
            self.lines.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread, or no loop: write at once, in order
            self.flush()
            return
        if self.timer is None:
            self.timer = loop.call_later(PROGRESS_EVERY, self.flush)

    def flush(self) -> None:
        with self.lock:
            lines, self.lines = self.lines, []
            if lines:
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def __call__(self, event: Any) -> None:
        from runtime.engine.events import RunStarted, TaskEnded, TaskRetrying, TaskStarted

        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self.emit(f"run {event.run_id} of {event.flow} started ({self.total} tasks)")
        elif isinstance(event, TaskStarted):
            again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self.emit(f"  {event.task:<24} running{again}")
        elif isinstance(event, TaskRetrying):
            self.emit(f"  {event.task:<24} retrying in {event.delay:.3g}s: {event.error}")
        elif isinstance(event, TaskEnded):
            if event.index is None:  # a task, not one of a mapped task's instances
                self.done += 1
            took = f"{event.duration:.2f}s" if event.duration is not None else ""
            why = event.error or event.reason or ""
            self.emit(
                f"  {event.task:<24} {event.state:<16}{took:>8}  "
                f"[{self.done}/{self.total}] {why}".rstrip()
            )


def _cmd_run(args: argparse.Namespace, config: Config) -> int:
    from runtime.errors import FlowValidationError

    try:
        flow = load_flow(config, args.flow)
        params = parse_params(args.param, flow.params)
        flow.resolve_params(params)
    except FlowValidationError as exc:
        for problem in exc.problems:
            err(problem)
        return EXIT_USAGE
    return _foreground(args, config, flow, lambda runner, handle: runner.run(
        flow, params, key=args.key, handle=handle
    ))  # fmt: skip


def _cmd_retry(args: argparse.Namespace, config: Config) -> int:
    from runtime.errors import FlowValidationError
    from runtime.store import connect_reader, queries

    conn = connect_reader(config.db)
    try:
        old = queries.get_run(conn, args.run_id)
    finally:
        conn.close()
    try:
        flow = load_flow(config, old["flow"])
    except FlowValidationError as exc:
        for problem in exc.problems:
            err(problem)
        return EXIT_USAGE
    return _foreground(args, config, flow, lambda runner, handle: runner.retry(
        flow, args.run_id, handle=handle
    ))  # fmt: skip


def _foreground(args: argparse.Namespace, config: Config, flow: Any, start: Any) -> int:
    """Run in the foreground: Ctrl-C cancels the run softly, a second one at once."""
    import anyio
    from anyio.abc import TaskGroup, TaskStatus

    from runtime.engine.events import EventBus
    from runtime.engine.handle import RunHandle
    from runtime.engine.runner import open_runner
    from runtime.scheduling.sla import run_sla_monitor
    from runtime.states import RunState

    bus = EventBus()
    quiet = args.quiet or args.json
    progress = _Progress(len(flow.tasks), quiet)
    bus.subscribe(progress)
    if config.log_level != "DEBUG":
        # the progress lines say what the engine's own log lines would; the store says when
        # it cannot commit, and when it can again
        logging.getLogger("sluiceway.runtime").setLevel(logging.ERROR)
        logging.getLogger("sluiceway.runtime.store").setLevel(logging.WARNING)
    if quiet:
        logging.getLogger("sluiceway.task").setLevel(logging.WARNING)
    else:
        _task_lines(progress)
    outcome: dict[str, Any] = {}

    async def main() -> None:
        handle = RunHandle()
        # The signal handler outlives the run: a Ctrl-C while the run's history is still
        # being committed (a locked database, a full disk) gives up on that wait.
        state: dict[str, Any] = {}

        async def on_signals(*, task_status: TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                count = 0
                async for _ in signals:
                    count += 1
                    progress.flush()
                    if "closing" not in state:
                        if count == 1:
                            err("cancelling the run (press Ctrl-C again to stop at once)")
                            handle.cancel()
                        else:
                            state["run"].cancel()
                    elif count == 1:
                        err("the run ended; its history is not committed yet (press Ctrl-C "
                            "again to give up on it)")  # fmt: skip
                    else:
                        err("giving up on the history not committed yet")
                        state["writer"].abandon()

        async def run_here() -> None:
            async with open_runner(config, bus=bus) as runner:
                state["writer"] = runner.store.writer
                try:
                    async with anyio.create_task_group() as tg:
                        state["run"] = tg.cancel_scope
                        await run_in(tg, runner)
                finally:
                    state["closing"] = True  # what is left: committing the history
                    progress.flush()  # its lines before what the store says

        async def run_in(tg: TaskGroup, runner: Any) -> None:
            lookup = {flow.name: flow}.get
            await tg.start(run_sla_monitor, bus, runner.store, runner.clock, lookup)

            async def on_cancel_requests() -> None:
                # `sluiceway cancel RUN_ID` from another shell: the same soft cancel
                from runtime.engine.events import RunStarted
                from runtime.store import queries

                started: list[int] = []
                bus.subscribe(
                    lambda e: started.append(e.run_id) if isinstance(e, RunStarted) else None
                )
                while not handle.cancel_requested:
                    await anyio.sleep(CANCEL_POLL)
                    if started and await runner.store.read(
                        queries.cancel_requests, started, flush=False
                    ):
                        progress.flush()
                        err(f"run {started[0]} cancel requested: cancelling")
                        handle.cancel()

            tg.start_soon(on_cancel_requests, name="cancel requests")
            try:
                outcome["result"] = await start(runner, handle)
            except SluicewayError as exc:
                # raised here, not through the task group, which would wrap it in a group
                outcome["error"] = exc
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as outer:
            await outer.start(on_signals, name="signals")
            try:
                with anyio.CancelScope() as opening:
                    state["run"] = opening  # a second Ctrl-C before the run began
                    await run_here()
            except SluicewayError as exc:  # the store's: e.g. the history was not committed
                outcome.setdefault("error", exc)
            outer.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        progress.flush()
    result = outcome.get("result")
    if "error" in outcome:
        if result is not None:  # it ran, but the history does not say how it ended
            err(f"run {result.id} of {result.flow} ended {result.state} in this process, "
                f"but that is not recorded in {config.db}")  # fmt: skip
        raise outcome["error"]
    if result is None:
        err("run cancelled")
        return EXIT_CANCELLED
    if args.json:
        from runtime.store import connect_reader, queries

        conn = connect_reader(config.db)
        try:
            out(codec.pretty(queries.get_run(conn, result.id)))
        finally:
            conn.close()
    else:
        err(f"run {result.id} of {result.flow} {result.state}")
    if result.state is RunState.SUCCEEDED:
        return EXIT_OK
    if result.state is RunState.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_FAILED


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: _Progress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.emit(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract
            self.handleError(record)


def _task_lines(progress: _Progress) -> None:
    """Show run.log lines live, indented under the progress lines (in their order)."""
    handler = _ProgressHandler(progress)
    handler.setFormatter(logging.Formatter("    %(sluiceway_task)s | %(sluiceway_message)s"))
    task_log = logging.getLogger("sluiceway.task")
    task_log.handlers[:] = [handler]
    task_log.propagate = False
    task_log.setLevel(logging.INFO)
    handler.addFilter(lambda record: hasattr(record, "sluiceway_message"))


_COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "run": _cmd_run,
    "retry": _cmd_retry,
}
# the other commands live in runtime/cli/<module>.py as cmd_<command>, imported when run
_LAZY = {
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
}


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace, Config], int]:
    """Import a command's module only when it runs: cold start stays small."""
    import importlib

    handler: Callable[[argparse.Namespace, Config], int] = getattr(
        importlib.import_module(f"runtime.cli.{module}"), name
    )
    return handler


if __name__ == "__main__":
    sys.exit(main())
