"""CLI: run and retry — one run in the foreground, with live progress; Ctrl-C cancels it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from runtime import codec
from runtime.cli.output import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    load_flow,
    out,
    parse_params,
)
from runtime.cli.signals import run_ctrl_c
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.result import RunResult
from runtime.engine.events import (
    Event,
    EventBus,
    RunStarted,
    TaskEnded,
    TaskRetrying,
    TaskStarted,
)
from runtime.engine.handle import RunHandle
from runtime.engine.runner import Runner, open_runner
from runtime.errors import FlowValidationError, SluicewayError
from runtime.scheduling.sla import run_sla_monitor
from runtime.states import RunState
from runtime.store import connect_reader, queries
from runtime.store.writer import Writer

CANCEL_POLL = 0.5  # how soon `sluiceway cancel` reaches a run in the foreground
PROGRESS_EVERY = 0.05  # the run's progress lines are written in batches this often

# starts the run on the runner and returns it ended: Runner.run or Runner.retry
Start = Callable[[Runner, RunHandle], Awaitable[RunResult]]


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway run FLOW [--param k=v] [--key KEY | --file PATH] [--quiet] [--json]``."""
    try:
        flow = load_flow(config, args.flow)
        params = parse_params(args.param, flow.params)
        resolved = flow.resolve_params(params)
    except FlowValidationError as exc:
        for problem in exc.problems:
            err(problem)
        return EXIT_USAGE
    if args.file is not None:  # as the flow's files() trigger would: claim, run, move
        from runtime.cli.files import file_start

        notes: list[str] = []
        start = file_start(args, config, flow, resolved, notes)
        if isinstance(start, int):
            return start
        code = _foreground(args, config, flow, start)
        for note in notes:  # what became of the file, after the run's own lines
            err(note)
        return code
    return _foreground(args, config, flow, lambda runner, handle: runner.run(
        flow, params, key=args.key, handle=handle
    ))  # fmt: skip


def cmd_retry(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway retry RUN_ID [--quiet] [--json]``."""
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


def _foreground(args: argparse.Namespace, config: Config, flow: Flow, start: Start) -> int:
    """Run in the foreground: Ctrl-C cancels the run softly, a second one at once."""
    bus = EventBus()
    quiet = args.quiet or args.json
    progress = _Progress(len(flow.tasks), quiet)
    bus.subscribe(progress)
    _quiet_logs(config, quiet, progress)
    run = _Foreground(config, flow, bus, progress, start)
    try:
        anyio.run(run.main)
    finally:
        progress.flush()
    result = run.result
    if run.error is not None:
        if result is not None:  # it ran, but the history does not say how it ended
            err(f"run {result.id} of {result.flow} ended {result.state} in this process, "
                f"but that is not recorded in {config.db}")  # fmt: skip
        raise run.error
    if result is None:
        err("run cancelled")
        return EXIT_CANCELLED
    if args.json:
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


def _quiet_logs(config: Config, quiet: bool, progress: _Progress) -> None:
    """The progress lines say what the engine's own log lines would: those are left out."""
    if config.log_level != "DEBUG":
        # the store still says when it cannot commit, and when it can again
        logging.getLogger("sluiceway.runtime").setLevel(logging.ERROR)
        logging.getLogger("sluiceway.runtime.store").setLevel(logging.WARNING)
    if quiet:
        logging.getLogger("sluiceway.task").setLevel(logging.WARNING)
    else:
        _task_lines(progress)


class _Foreground:
    """One run in this process, and what Ctrl-C does to it.

    The signal handler outlives the run: a Ctrl-C while the run's history is still being
    committed (a locked database, a full disk) gives up on that wait.
    """

    def __init__(
        self, config: Config, flow: Flow, bus: EventBus, progress: _Progress, start: Start
    ) -> None:
        self.config = config
        self.flow = flow
        self.bus = bus
        self.progress = progress
        self.start = start
        self.handle = RunHandle()
        self.scope: anyio.CancelScope | None = None  # what a second Ctrl-C cancels
        self.writer: Writer | None = None  # what a second Ctrl-C gives up on, once closing
        self.closing = False  # the run ended: what is left is committing its history
        self.result: RunResult | None = None
        self.error: SluicewayError | None = None

    def soft(self) -> None:
        """The first Ctrl-C."""
        self.progress.flush()
        if not self.closing:
            err("cancelling the run (press Ctrl-C again to stop at once)")
            self.handle.cancel()
        else:
            err("the run ended; its history is not committed yet (press Ctrl-C again to give "
                "up on it)")  # fmt: skip

    def hard(self) -> None:
        """Every later Ctrl-C."""
        self.progress.flush()
        if not self.closing:
            if self.scope is not None:
                self.scope.cancel()
        else:
            err("giving up on the history not committed yet")
            if self.writer is not None:
                self.writer.abandon()

    async def main(self) -> None:
        async with anyio.create_task_group() as outer:
            await outer.start(run_ctrl_c, self.soft, self.hard, name="signals")
            try:
                with anyio.CancelScope() as opening:
                    self.scope = opening  # a second Ctrl-C before the run began
                    await self._run_here()
            except SluicewayError as exc:  # the store's: e.g. the history was not committed
                self.error = self.error or exc
            outer.cancel_scope.cancel()

    async def _run_here(self) -> None:
        async with open_runner(self.config, bus=self.bus) as runner:
            self.writer = runner.store.writer
            try:
                async with anyio.create_task_group() as tg:
                    self.scope = tg.cancel_scope
                    await self._run_in(tg, runner)
            finally:
                self.closing = True
                self.progress.flush()  # its lines before what the store says

    async def _run_in(self, tg: TaskGroup, runner: Runner) -> None:
        lookup = {self.flow.name: self.flow}.get
        await tg.start(run_sla_monitor, self.bus, runner.store, runner.clock, lookup)
        tg.start_soon(self._on_cancel_requests, runner, name="cancel requests")
        try:
            self.result = await self.start(runner, self.handle)
        except SluicewayError as exc:
            # raised here, not through the task group, which would wrap it in a group
            self.error = exc
        tg.cancel_scope.cancel()

    async def _on_cancel_requests(self, runner: Runner) -> None:
        """``sluiceway cancel RUN_ID`` from another shell: the same soft cancel."""
        started: list[int] = []
        self.bus.subscribe(
            lambda e: started.append(e.run_id) if isinstance(e, RunStarted) else None
        )
        while not self.handle.cancel_requested:
            await anyio.sleep(CANCEL_POLL)
            if started and await runner.store.read(queries.cancel_requests, started, flush=False):
                self.progress.flush()
                err(f"run {started[0]} cancel requested: cancelling")
                self.handle.cancel()


class _Progress:
    """Live lines on stderr: each task start and end, with a done/total count.

    Lines are written in batches at most every 50 ms: a write and flush per line cost more
    than running the task itself for a flow of 10,000 small tasks.
    """

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.lines: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.lock = threading.Lock()  # run.log lines of `def` tasks come from threads

    def emit(self, line: str) -> None:
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

    def __call__(self, event: Event) -> None:
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
