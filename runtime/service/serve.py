"""The long-running service: one task group for triggers, the run queue, recovery and signals."""

from __future__ import annotations

import errno
import logging
import signal
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from runtime.clock import Clock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.loader import LoadedFlows, load_flows_off_loop
from runtime.engine.events import EventBus
from runtime.engine.handle import RunHandle
from runtime.engine.runner import Runner, open_runner
from runtime.errors import SluicewayError
from runtime.service import sdnotify
from runtime.states import RunState
from runtime.store import Store, queries, queue, requests
from runtime.store.cursors import paused_flows
from runtime.store.lock import DatabaseLock
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.service")

QUEUE_POLL = 0.25  # how soon a run queued by another process (the CLI) is picked up
QUEUE_BATCH = 1000  # most runs of one flow claimed in one pass


@dataclass(slots=True)
class ServiceContext:
    """What the service's children share.

    :ivar flows: the flows that can run now, by name; a reload replaces the mapping (runs that
        already started keep the Flow object they started with)
    :ivar epoch: this process's epoch id; runs it claims carry it, so a restart finds orphans
    """

    config: Config
    runner: Runner
    flows: Mapping[str, Flow]
    epoch: int
    flows_changed: anyio.Event = field(default_factory=anyio.Event)
    queue_changed: anyio.Event = field(default_factory=anyio.Event)
    stopping: bool = False

    @property
    def store(self) -> Store:
        return self.runner.store

    @property
    def clock(self) -> Clock:
        return self.runner.clock

    def replace_flows(self, flows: Mapping[str, Flow]) -> None:
        """Swap in a reloaded set of flows and wake whoever plans from them."""
        self.flows = flows
        self.flows_changed.set()
        self.flows_changed = anyio.Event()

    def wake_queue(self) -> None:
        """A run was queued in this process: claim it now instead of at the next poll."""
        self.queue_changed.set()
        self.queue_changed = anyio.Event()


class Service:
    """``sluiceway serve``: everything long-lived is a child of :meth:`run`'s task groups.

    Three nested groups make shutdown orderly: *feeders* (scheduler, queue, reload, SLA,
    watchdog) stop first, so nothing new is admitted; *runs* get ``shutdown_grace`` to finish
    and are then interrupted (resumed at the next start); the outer group holds the signal
    handler until the store is flushed.
    """

    def __init__(self, ctx: ServiceContext, files: dict[Path, list[str]]) -> None:
        self.ctx = ctx
        self.active: dict[int, RunHandle] = {}
        self.waiting_said: dict[str, str] = {}  # flow name: why its queued runs wait
        self.orphans: dict[int, str] = {}  # runs to resume once their flow loads: flow name
        self.folder_missing = False  # the flows folder is away; the loaded flows stay
        self.files = files  # flow names per file, from the last good load of each file
        self.feeders: anyio.CancelScope | None = None
        self.reloading = anyio.Lock()
        self.runs: TaskGroup | None = None
        self.stopping = False

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        self.ctx.store.writer.on_health = self._say_status
        async with anyio.create_task_group() as outer:
            await outer.start(self._handle_signals, outer, name="signals")
            # the reasons an earlier service left are not this one's to show
            queue.clear_wait_reasons(self.ctx.store)
            requests.record_served(self.ctx.store, self.ctx.flows.values())
            async with anyio.create_task_group() as runs:
                self.runs = runs
                await self._recover()
                async with anyio.create_task_group() as feeders:
                    self.feeders = feeders.cancel_scope
                    await self._start_feeders(feeders)
                    log.info(
                        "service ready: %d flow(s), epoch %d", len(self.ctx.flows), self.ctx.epoch
                    )
                    sdnotify.notify("READY=1\nSTATUS=" + self._status())
                    if ready is not None:
                        ready.set()
            queue.clear_wait_reasons(self.ctx.store)  # no service decides them any more
            requests.record_served(self.ctx.store, [])
            outer.cancel_scope.cancel()  # the runs are done: stop listening for signals

    async def _start_feeders(self, feeders: TaskGroup) -> None:
        from runtime.scheduling.sla import run_sla_monitor
        from runtime.scheduling.ticker import run_scheduler

        ctx = self.ctx
        await feeders.start(run_scheduler, ctx, name="scheduler")
        await feeders.start(self._run_queue, name="queue")
        await feeders.start(
            run_sla_monitor,
            ctx.runner.bus,
            ctx.store,
            ctx.clock,
            lambda name: self.ctx.flows.get(name),  # the flows of the latest reload
            name="sla",
        )
        await feeders.start(self._watch_flows, name="reload")
        interval = sdnotify.watchdog_interval()
        if interval:
            feeders.start_soon(self._watchdog, interval, name="watchdog")

    # --- runs ---

    async def _recover(self) -> None:
        """Resume the runs an earlier process left running (found by epoch, not heartbeat).

        An orphan whose flow is not loaded (its file is broken or gone) waits, with that
        reason, and is resumed by the first pass of the queue after a reload loads it.
        """
        orphans = await self.ctx.store.read(queries.runs_to_recover, self.ctx.epoch)
        resumed = 0
        for run_id, name in orphans:
            flow = self.ctx.flows.get(name)
            if flow is None:
                reason = f"waiting: flow {name!r} is not loaded"
                log.error(
                    "run=%s flow=%s cannot resume: the flow is not loaded; it resumes when the "
                    "flow loads",
                    run_id,
                    name,
                )
                self.orphans[run_id] = name
                self.ctx.store.put_run(RunRow(run_id, RunState.RUNNING, wait_reason=reason))
                continue
            await self._resume(flow, run_id)  # committed before READY: the takeover is on record
            resumed += 1
        if orphans:
            waiting = ""
            if self.orphans:
                names = sorted(set(self.orphans.values()))
                waiting = f"; {len(self.orphans)} run(s) wait for their flow to load: {names}"
            log.info("recovery: %d run(s) resumed%s", resumed, waiting)

    async def _resume_loaded_orphans(self) -> None:
        """Resume the orphans whose flow a reload has loaded since."""
        for run_id, name in list(self.orphans.items()):
            flow = self.ctx.flows.get(name)
            if flow is not None and not self.ctx.stopping:
                del self.orphans[run_id]
                log.info("run=%s flow=%s: the flow is loaded now", run_id, name)
                await self._resume(flow, run_id)

    async def _resume(self, flow: Flow, run_id: int) -> None:
        # the interrupted attempts are recorded and the run taken over before it starts
        await self.ctx.store.mark_interrupted(run_id, self.ctx.epoch, self.ctx.clock.now())
        # a resumed run was admitted before the restart: it does not wait its turn again
        self.ctx.runner.limits.force_admit_run(flow.name, flow.max_active_runs)
        self._start(flow, run_id)

    def _start(self, flow: Flow, run_id: int, claimed: Mapping[str, Any] | None = None) -> None:
        """Execute a claimed run, or resume an orphan (*claimed* is None), as a child."""
        assert self.runs is not None
        handle = self.active[run_id] = RunHandle()
        self.runs.start_soon(self._execute, flow, run_id, handle, claimed, name=f"run {run_id}")

    async def _execute(
        self, flow: Flow, run_id: int, handle: RunHandle, claimed: Mapping[str, Any] | None
    ) -> None:
        runner = self.ctx.runner
        try:
            if claimed is None:
                await runner.resume(flow, run_id, handle=handle)
            else:
                await runner.run_claimed(flow, run_id, claimed, handle=handle)
        except Exception:  # one run is an isolation boundary: report it, keep serving
            log.exception("run=%s flow=%s stopped with an internal error", run_id, flow.name)
        finally:
            self.active.pop(run_id, None)
            self.ctx.wake_queue()
            sdnotify.notify("STATUS=" + self._status())

    async def _run_queue(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim queued runs (from the scheduler, the CLI, another process) as slots allow,
        and pass cancel requests from other processes to the runs they name."""
        task_status.started()
        while True:
            changed = self.ctx.queue_changed
            try:
                await self._claim_and_cancel()
            except SluicewayError as exc:  # a busy or failing disk: report, keep serving
                log.error("run queue: %s; trying again", exc)
            with anyio.move_on_after(QUEUE_POLL):
                await changed.wait()

    async def _claim_and_cancel(self) -> None:
        await self._resume_loaded_orphans()
        await self._claim()
        store = self.ctx.store
        for run_id in await store.read(queries.cancel_requests, list(self.active)):
            handle = self.active.get(run_id)
            if handle is not None and not handle.cancel_requested:
                log.info("run=%s cancel requested", run_id)
                handle.cancel()

    async def _claim(self) -> None:
        """Claim the oldest queued runs of every flow that can start some now.

        Picked per flow, in one read: a flow that cannot start runs (not loaded, paused, at
        ``max_active_runs``) costs one index seek and a wait reason for the flow, however long
        its backlog, and never holds back the runs of another flow.
        """
        store, runner = self.ctx.store, self.ctx.runner
        flows = self.ctx.flows  # this pass's view; a reload wakes the queue for another pass
        free = {
            name: _free_run_slots(runner, flow)
            for name, flow in flows.items()
            if flow.max_active_runs is not None
        }
        names, paused, picked = await store.read(_queue_pass, flows, free, self.ctx.epoch)
        reasons: dict[str, str] = {}
        starting: list[tuple[Flow, int]] = []
        for name in names:
            flow = flows.get(name)
            if flow is None:
                reasons[name] = f"waiting: flow {name!r} is not loaded"
                continue
            if name in paused:
                reasons[name] = f"waiting: flow {name!r} is paused"
                continue
            for run_id in picked.get(name, ()):
                if run_id in self.active:
                    continue
                if not runner.try_admit(flow):
                    break
                starting.append((flow, run_id))
            if flow.max_active_runs is not None:
                if runner.try_admit(flow):  # a run slot is still free
                    runner.release_admission(flow)
                else:  # the runs left queued wait for one
                    reasons[name] = f"waiting: max_active_runs={flow.max_active_runs} reached"
        self._say_waiting(reasons)
        if not starting:
            return
        try:
            # shielded: a stop arriving now must not leave claimed runs unstarted (they
            # would stay "running" until the next start resumes them)
            with anyio.CancelScope(shield=True):
                claimed = await store.claim_runs(
                    [run_id for _, run_id in starting], self.ctx.epoch, self.ctx.clock.now()
                )
        except BaseException:
            for flow, _ in starting:
                runner.release_admission(flow)
            raise
        for flow, run_id in starting:  # one statement claimed them all
            if run_id in claimed:
                self._start(flow, run_id, claimed[run_id])
            else:  # claimed by another process meanwhile, or cancelled
                runner.release_admission(flow)

    def _say_waiting(self, reasons: dict[str, str]) -> None:
        """Store the flows' wait reasons that changed since the last pass."""
        changed: dict[str, str | None] = {
            name: reason
            for name, reason in reasons.items()
            if self.waiting_said.get(name) != reason
        }
        changed.update((name, None) for name in self.waiting_said.keys() - reasons.keys())
        self.waiting_said = reasons
        queue.set_wait_reasons(self.ctx.store, changed)

    # --- reload ---

    async def reload(self) -> None:
        """Reload the flows folder. A file that no longer loads keeps its last good flows,
        and so does every file while the folder is missing (a deploy that swaps the folder
        by rename must not unload the flows for a moment: their schedules would skip).

        The files are imported off the event loop, so runs, the scheduler and the writer go
        on during a slow import; a child process imports them first, so a file that would end
        or crash the service is reported and not imported (:mod:`runtime.define.probe`).
        """
        async with self.reloading:  # one at a time, applied in the order they loaded
            config = self.ctx.config
            if not config.flows.is_dir():
                self._folder_missing()
                return
            try:
                loaded = await load_flows_off_loop(config.flows, config.pools)
            except Exception:
                log.exception("reload failed; the flows stay as they were")
                return
            if not config.flows.is_dir():  # gone while loading: what was read may be partial
                self._folder_missing()
                return
            self._apply_reload(loaded)

    def _apply_reload(self, loaded: LoadedFlows) -> None:
        ctx = self.ctx
        flows = dict(loaded.flows)
        for path, names in loaded.files.items():
            if names or path not in self.files:
                continue
            for name in self.files[path]:  # the file failed to import: keep its last version
                if name in ctx.flows:
                    flows.setdefault(name, ctx.flows[name])
        for name in loaded.broken:
            if name in ctx.flows:
                flows[name] = ctx.flows[name]
        for problem in loaded.problems:
            log.error("reload: %s (the last good version stays)", problem)
        for path, names in loaded.files.items():
            if names:
                self.files[path] = names
        for path in set(self.files) - set(loaded.files):
            del self.files[path]  # removed file: its flows go
        added = sorted(set(flows) - set(ctx.flows))
        removed = sorted(set(ctx.flows) - set(flows))
        changed = sorted(
            n
            for n in set(flows) & set(ctx.flows)
            if flows[n].source_hash() != ctx.flows[n].source_hash()
        )
        log.info(
            "reloaded flows: %d loaded, added %s, changed %s, removed %s",
            len(flows),
            added or "none",
            changed or "none",
            removed or "none",
        )
        for name in (*added, *changed):
            _record(ctx.runner, flows[name])
        ctx.replace_flows(flows)
        requests.record_served(ctx.store, flows.values())
        ctx.wake_queue()

    def _folder_missing(self) -> None:
        """Say once per episode that the folder is away (the watcher says when it is back)."""
        if self.folder_missing:
            return
        self.folder_missing = True
        log.warning(
            "flows folder %s is missing; the %d loaded flow(s) stay as they are until it returns",
            self.ctx.config.flows,
            len(self.ctx.flows),
        )

    async def _watch_flows(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Reload on changes of the flows folder; started() once the watch is armed."""
        from watchfiles import Change, awatch

        folder = self.ctx.config.flows
        root = str(folder.resolve())

        def python_files(change: Change, path: str) -> bool:
            return path.endswith(".py") or path == root

        # awatch waits in a worker thread that sees a cancel only when it returns: its stop
        # event ends it at once. It also returns every 0.1 s (yield_on_timeout), which tells
        # that the watch is armed, and lets the loop notice the folder was replaced: a watch
        # on a deleted folder reports nothing ever again, without an error.
        stop = anyio.Event()
        snapshot = _mtimes(folder)  # as last loaded: a change while not armed still counts
        started = False
        polling = False  # inotify cannot see NFS changes or may hit its watch limit
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_when_cancelled, stop)
            while True:
                catch_up = True
                identity = _identity(folder)
                try:
                    async for changes in awatch(
                        folder,
                        watch_filter=python_files,
                        debounce=300,
                        stop_event=stop,
                        yield_on_timeout=True,
                        rust_timeout=100,
                        force_polling=polling,
                    ):
                        if catch_up:  # armed now: catch up on what the gap hid
                            catch_up = False
                            if self.folder_missing:
                                self.folder_missing = False
                                log.warning("flows folder %s is back", folder)
                            if not started:
                                started = True
                                task_status.started()
                            if _mtimes(folder) != snapshot:
                                changes = changes or {(Change.modified, str(folder))}
                        if changes:
                            await self.reload()
                            snapshot = _mtimes(folder)
                        root_gone = (Change.deleted, root) in changes
                        if root_gone or _identity(folder) != identity:
                            break
                except FileNotFoundError:
                    self._folder_missing()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or polling:
                        raise
                    log.error(
                        "cannot watch %s: the inotify watch limit is reached (raise sysctl "
                        "fs.inotify.max_user_watches); polling the folder instead",
                        folder,
                    )
                    polling = True
                else:
                    if stop.is_set():  # the service is stopping, not the folder changing
                        return
                    if folder.is_dir():
                        log.warning("flows folder %s was replaced; watching it again", folder)
                    else:  # moved away or deleted
                        self._folder_missing()
                if not started:  # READY does not wait for a missing folder
                    started = True
                    task_status.started()
                await anyio.sleep(0.5)

    # --- signals, watchdog ---

    async def _handle_signals(
        self, outer: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading flows")
                    # not awaited here: a SIGTERM during a slow import is still heard
                    outer.start_soon(self._reload_on_sighup, name="SIGHUP reload")
                elif not self.stopping:
                    self.stopping = self.ctx.stopping = True
                    grace = self.ctx.config.shutdown_grace
                    log.info(
                        "%s: stopping; %d run(s) get %gs to finish",
                        signal.Signals(signum).name,
                        len(self.active),
                        grace,
                    )
                    sdnotify.notify(f"STOPPING=1\nSTATUS=stopping, {len(self.active)} run(s)")
                    if self.feeders is not None:
                        self.feeders.cancel()
                    outer.start_soon(self._interrupt_after, grace, name="grace")
                else:
                    log.warning("second signal: interrupting %d run(s) now", len(self.active))
                    self._interrupt_all()

    async def _reload_on_sighup(self) -> None:
        sdnotify.notify("RELOADING=1")
        await self.reload()
        sdnotify.notify("READY=1\nSTATUS=" + self._status())

    async def _interrupt_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        if self.active:
            log.warning("shutdown grace over: interrupting %d run(s)", len(self.active))
        self._interrupt_all()

    def _interrupt_all(self) -> None:
        for handle in list(self.active.values()):
            handle.interrupt()

    async def _watchdog(self, interval: float) -> None:
        # a ping from the loop itself: a blocked loop misses it and systemd restarts us
        while True:
            sdnotify.notify("WATCHDOG=1")
            await anyio.sleep(interval / 2)

    def _say_status(self) -> None:
        sdnotify.notify("STATUS=" + self._status())

    def _status(self) -> str:
        status = f"{len(self.active)} run(s) active, {len(self.ctx.flows)} flow(s)"
        writer = self.ctx.store.writer
        failing = writer.failing
        if failing is not None:  # said at once: the writer calls back when it starts and ends
            status += f"; history NOT committed ({failing}), {writer.backlog()} waiting"
        return status


def _free_run_slots(runner: Runner, flow: Flow) -> int:
    """How many more runs of *flow* may start now under its ``max_active_runs`` (at most
    :data:`QUEUE_BATCH`); nothing is taken."""
    free = 0
    while free < QUEUE_BATCH and runner.try_admit(flow):
        free += 1
    for _ in range(free):
        runner.release_admission(flow)
    return free


def _queue_pass(
    conn: sqlite3.Connection, flows: Mapping[str, Flow], free: Mapping[str, int], epoch: int
) -> tuple[list[str], set[str], dict[str, list[int]]]:
    """One read for a pass of the queue: the flows with queued runs, the paused flows, and
    the oldest claimable runs of each flow that can start some (loaded, not paused, with
    ``free`` run slots, or :data:`QUEUE_BATCH` without a limit)."""
    names = queue.queued_flows(conn)
    if not names:
        return names, set(), {}
    paused = paused_flows(conn)
    wanted = {
        name: free.get(name, QUEUE_BATCH)
        for name in names
        if name in flows and name not in paused and free.get(name, QUEUE_BATCH) > 0
    }
    return names, paused, queue.oldest_claimable(conn, wanted, epoch) if wanted else {}


def _mtimes(folder: Path) -> dict[str, int] | None:
    try:
        return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.py")}
    except OSError:
        return None


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


async def _set_when_cancelled(event: anyio.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        event.set()


async def run_service(
    config: Config,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    ready: anyio.Event | None = None,
) -> None:
    """Run the service until SIGTERM/SIGINT (in-process entry point; tests use it too).

    :raises StoreError: when another service holds the database
    """
    lock = DatabaseLock(config.db)
    lock.acquire()
    try:
        sdnotify.notify("STATUS=starting")
        async with open_runner(config, clock=clock, bus=bus) as runner:
            epoch = runner.epoch
            loaded = await load_flows_off_loop(config.flows, config.pools)
            for problem in loaded.problems:
                log.error("%s", problem)
            for flow in loaded.flows.values():
                _record(runner, flow)
            ctx = ServiceContext(config, runner, dict(loaded.flows), epoch)
            service = Service(ctx, {p: n for p, n in loaded.files.items() if n})
            await service.run(ready=ready)
        log.info("service stopped")
    finally:
        lock.release()


def _record(runner: Runner, flow: Flow) -> None:
    path = str(flow.path) if flow.path else None
    runner.store.record_flow(flow.name, path, flow.source_hash(), runner.clock.now())


def serve(config: Config) -> int:
    """``sluiceway serve``: returns the exit code (0 after a clean stop)."""
    anyio.run(run_service, config)
    return 0
