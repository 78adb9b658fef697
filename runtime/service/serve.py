"""The long-running service: its task groups, signals and systemd notifications (serve)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus

from runtime.clock import Clock
from runtime.config import Config
from runtime.define.loader import load_flows_off_loop
from runtime.engine.events import EventBus
from runtime.engine.runner import open_runner
from runtime.errors import ConfigError
from runtime.service import sdnotify
from runtime.service.alerts import AlertHub, Routing, build_routing
from runtime.service.api.listen import Listener, open_listener
from runtime.service.context import ServiceContext
from runtime.service.queue import RunQueue
from runtime.service.recovery import Recovery
from runtime.service.reload import Reloader, record_flow
from runtime.service.runs import ActiveRuns
from runtime.service.sources import Sources
from runtime.service.upstream import Upstreams
from runtime.store import queue, requests
from runtime.store.lock import DatabaseLock

if TYPE_CHECKING:
    from runtime.service.api.server import ApiServer

log = logging.getLogger("sluiceway.runtime.service")


class Service:
    """``sluiceway serve``: the process's task groups, and its part in signals and systemd.

    It owns what the others run in: three nested task groups, so that shutdown is orderly.
    *Feeders* (scheduler, queue, trigger sources, reload, SLA, watchdog) stop first, so
    nothing new is admitted; *runs* get ``shutdown_grace`` to finish and are then interrupted (resumed at the
    next start); the outer group holds the signal handler until the store is flushed. It
    owns the signal handling (SIGTERM/SIGINT stop, a second one interrupts at once, SIGHUP
    reloads) and what systemd is told (READY, STATUS, STOPPING, WATCHDOG). The work is done by
    its parts: :class:`ActiveRuns` (the runs executing), :class:`Recovery` (orphans of an
    earlier process), :class:`RunQueue` (claiming queued runs) and :class:`Reloader` (the
    flows folder); the scheduler and the SLA monitor get what they use as arguments.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        files: dict[Path, list[str]],
        alerts: AlertHub | None = None,
        reread: Callable[[], Config] | None = None,
        api: Listener | None = None,
    ) -> None:
        self.ctx = ctx
        self.alerts = alerts or AlertHub(
            ctx.store, ctx.clock, ctx.config, Routing(), lambda: self.ctx.flows
        )
        self.reread = reread  # the config again, for SIGHUP (alert routing)
        self.runs = ActiveRuns(ctx, on_end=self._say_status)
        self.recovery = Recovery(ctx, self.runs)
        self.run_queue = RunQueue(ctx, self.runs, self.recovery)
        self.reloader = Reloader(ctx, files)
        self.sources = Sources(ctx)
        self.upstreams = Upstreams(ctx)
        self.api: ApiServer | None = None
        if api is not None:  # aiohttp is imported only when [api] is configured
            from runtime.service.api.server import ApiServer

            self.api = ApiServer(ctx, api)
        self.feeders: anyio.CancelScope | None = None
        self.stopping = False

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        self.ctx.store.writer.on_health = self._say_status
        async with anyio.create_task_group() as outer:
            await outer.start(self._handle_signals, outer, name="signals")
            # the reasons an earlier service left are not this one's to show
            queue.clear_wait_reasons(self.ctx.store)
            requests.record_served(self.ctx.store, self.ctx.flows.values())
            # alerts in their own group: they go on while runs finish, and are drained after
            async with anyio.create_task_group() as alerting:
                await alerting.start(self.alerts.sender.run, name="alerts")
                await self._serve_runs(ready)
                await self.alerts.sender.drain(self._drain_time())
                alerting.cancel_scope.cancel()
            queue.clear_wait_reasons(self.ctx.store)  # no service decides them any more
            requests.record_served(self.ctx.store, [])
            outer.cancel_scope.cancel()  # the runs are done: stop listening for signals

    async def _serve_runs(self, ready: anyio.Event | None) -> None:
        async with anyio.create_task_group() as run_group:
            self.runs.group = run_group
            await self.recovery.recover()
            self.ctx.waiting_for = "start"
            async with anyio.create_task_group() as feeders:
                self.feeders = feeders.cancel_scope
                await self._start_feeders(feeders)
                self.ctx.ready = True  # before the log line: a probe that saw it gets a 200
                log.info("service ready: %d flow(s), epoch %d", len(self.ctx.flows), self.ctx.epoch)
                self.alerts.service_event(
                    "service.started",
                    f"sluiceway service started (epoch {self.ctx.epoch}, "
                    f"{len(self.ctx.flows)} flow(s))",
                )
                sdnotify.notify("READY=1\nSTATUS=" + self._status())
                if ready is not None:
                    ready.set()

    def _drain_time(self) -> float:
        """How long alerts still queued at shutdown may take to go out (else: next start)."""
        config = self.ctx.config
        return min(config.shutdown_grace, config.alert_timeout + 1.0)

    async def _start_feeders(self, feeders: TaskGroup) -> None:
        from runtime.scheduling.sla import run_sla_monitor
        from runtime.scheduling.ticker import run_scheduler

        ctx = self.ctx
        await feeders.start(
            run_scheduler,
            ctx.store,
            ctx.clock,
            lambda: self.ctx.flows,  # the flows of the latest reload
            lambda: self.ctx.schedule_changed,  # a reload, or an unpause through the API
            ctx.wake_queue,
            name="scheduler",
        )
        await feeders.start(self.run_queue.run, name="queue")
        # after the queue: a source's start-up scan queues what arrived while we were down
        await feeders.start(self.sources.run, name="trigger sources")
        # on_flow: what ended while the service was down is queued before READY
        await feeders.start(self.upstreams.run, name="on_flow triggers")
        await feeders.start(
            run_sla_monitor,
            ctx.runner.bus,
            ctx.store,
            ctx.clock,
            lambda name: self.ctx.flows.get(name),  # the flows of the latest reload
            name="sla",
        )
        await feeders.start(self.reloader.watch, name="reload")
        if ctx.config.history.retention is not None:
            from runtime.service.retention import run_retention

            await feeders.start(
                run_retention, ctx.store, ctx.clock, ctx.config.history, name="retention"
            )
        if self.api is not None:
            await feeders.start(self.api.run, name="api")
        interval = sdnotify.watchdog_interval()
        if interval:
            feeders.start_soon(self._watchdog, interval, name="watchdog")

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
                    self.ctx.ready, self.ctx.waiting_for = False, "stopping"
                    grace = self.ctx.config.shutdown_grace
                    log.info(
                        "%s: stopping; %d run(s) get %gs to finish",
                        signal.Signals(signum).name,
                        len(self.runs),
                        grace,
                    )
                    sdnotify.notify(f"STOPPING=1\nSTATUS=stopping, {len(self.runs)} run(s)")
                    self.alerts.service_event(
                        "service.stopping",
                        f"sluiceway service stopping ({signal.Signals(signum).name}),"
                        f" {len(self.runs)} run(s) active",
                    )
                    if self.feeders is not None:
                        self.feeders.cancel()
                    outer.start_soon(self._interrupt_after, grace, name="grace")
                else:
                    log.warning("second signal: interrupting %d run(s) now", len(self.runs))
                    self.runs.interrupt_all()

    async def _reload_on_sighup(self) -> None:
        sdnotify.notify("RELOADING=1")
        if self.reread is not None:
            try:
                self.alerts.reload(self.reread())
            except ConfigError as exc:
                log.error("SIGHUP: %s (the last good alert routing stays)", exc)
        await self.reloader.reload()
        sdnotify.notify("READY=1\nSTATUS=" + self._status())

    async def _interrupt_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        if self.runs:
            log.warning("shutdown grace over: interrupting %d run(s)", len(self.runs))
        self.runs.interrupt_all()

    async def _watchdog(self, interval: float) -> None:
        # a ping from the loop itself: a blocked loop misses it and systemd restarts us
        while True:
            sdnotify.notify("WATCHDOG=1")
            await anyio.sleep(interval / 2)

    def _say_status(self) -> None:
        sdnotify.notify("STATUS=" + self._status())

    def _status(self) -> str:
        status = f"{len(self.runs)} run(s) active, {len(self.ctx.flows)} flow(s)"
        writer = self.ctx.store.writer
        failing = writer.failing
        if failing is not None:  # said at once: the writer calls back when it starts and ends
            status += f"; history NOT committed ({failing}), {writer.backlog()} waiting"
        return status


async def run_service(
    config: Config,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    ready: anyio.Event | None = None,
    reread: Callable[[], Config] | None = None,
) -> None:
    """Run the service until SIGTERM/SIGINT (in-process entry point; tests use it too).

    :param reread: reads the config again on SIGHUP (for the alert routing)
    :raises ConfigError: when an alert route or notifier is bad (before anything starts)
    :raises StoreError: when another service holds the database
    :raises ConfigError: when ``[api]`` is misconfigured or its address cannot be bound
    """
    routing = build_routing(config)
    lock = DatabaseLock(config.db)
    lock.acquire()
    api: Listener | None = None
    try:
        api = open_listener(config.api, config.db)  # a bad [api] or a busy port refuses the start
        sdnotify.notify("STATUS=starting")
        async with open_runner(config, clock=clock, bus=bus) as runner:
            epoch = runner.epoch
            loaded = await load_flows_off_loop(config.flows, config.pools, config.executors)
            for problem in loaded.problems:
                log.error("%s", problem)
            for flow in loaded.flows.values():
                record_flow(runner, flow)
            ctx = ServiceContext(config, runner, dict(loaded.flows), epoch)
            alerts = AlertHub(ctx.store, ctx.clock, config, routing, lambda: ctx.flows)
            ctx.alerts = alerts
            files = {p: n for p, n in loaded.files.items() if n}
            service = Service(ctx, files, alerts, reread, api)
            for problem in routing.flow_problems(ctx.flows.values()):
                log.error("%s", problem)
            alerts.attach(runner.bus)
            for problem in [*routing.flow_problems(ctx.flows.values()), *loaded.problems]:
                alerts.service_event("trigger.error", problem)
            try:
                await service.run(ready=ready)
            finally:
                alerts.detach()
        log.info("service stopped")
    finally:
        if api is not None:
            api.close()
        lock.release()


def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """``sluiceway serve``: returns the exit code (0 after a clean stop)."""
    anyio.run(lambda: run_service(config, reread=reread))
    return 0
