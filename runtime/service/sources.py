"""The service's trigger sources: one plugin instance per plugin name the loaded flows use,
each supervised in the feeders' task group, re-bound after every reload."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from runtime.abc import Binding, SourceMetric, TriggerSource
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.registry import PluginError, trigger_source
from runtime.service.context import ServiceContext

log = logging.getLogger("sluiceway.runtime.sources")

RESTART_FIRST = 1.0  # a source that raised is started again after this, doubling ...
RESTART_MAX = 60.0  # ... up to this


def bindings(flows: Mapping[str, Flow]) -> dict[str, list[Binding]]:
    """The plugin triggers of *flows*, by plugin name."""
    found: dict[str, list[Binding]] = {}
    for flow in flows.values():
        base = flow.path.parent if flow.path is not None else Path.cwd()
        for spec in flow.sources:
            binding = Binding(flow.name, str(spec), spec.options, base, spec.where or flow.where)
            found.setdefault(spec.plugin, []).append(binding)
    return found


class ServiceHost:
    """What the service gives its trigger sources (:class:`runtime.abc.TriggerHost`)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    @property
    def store(self) -> Any:
        return self._ctx.store

    @property
    def config(self) -> Config:
        """The service's config (a source reads its own table, e.g. ``[files]``)."""
        return self._ctx.config

    @property
    def bus(self) -> Any:
        return self._ctx.runner.bus

    @property
    def epoch(self) -> int:
        return self._ctx.epoch

    def now(self) -> datetime:
        return self._ctx.clock.now()

    def flow(self, name: str) -> Flow | None:
        return self._ctx.flows.get(name)

    def wake_queue(self) -> None:
        self._ctx.wake_queue()

    def report(self, binding: Binding | None, problem: str) -> None:
        where = f"{binding.where}: flow {binding.flow!r}: {binding.key}: " if binding else ""
        log.error("trigger: %s%s", where, problem)
        if self._ctx.alerts is not None:
            self._ctx.alerts.service_event(
                "trigger.error", f"trigger: {where}{problem}", flow=binding and binding.flow
            )


class Sources:
    """Starts the trigger sources the flows need and keeps them bound to the latest flows.

    A source is made the first time a loaded flow uses its plugin and then runs until the
    service stops; a reload re-binds every source (one whose triggers all went away is bound
    to nothing). A source that raises is logged and started again after a pause that
    doubles up to :data:`RESTART_MAX`: it never stops the service or another source.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.host = ServiceHost(ctx)
        self.running: dict[str, TriggerSource] = {}
        self._refused: set[str] = set()  # plugin names already reported as not loading
        ctx.trigger_metrics = self.metrics

    def metrics(self) -> dict[str, Sequence[SourceMetric]]:
        """Each running source's metrics, by plugin name; a source whose ``metrics()``
        raises is logged and left out (a scrape never fails for a plugin)."""
        found: dict[str, Sequence[SourceMetric]] = {}
        for name, source in self.running.items():
            try:
                found[name] = list(source.metrics())
            except Exception:
                log.exception("trigger source %r: metrics() failed", name)
        return found

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the sources of the current flows (each one's start-up scan done), then
        re-bind after every reload; until cancelled."""
        async with anyio.create_task_group() as group:
            changed = self.ctx.flows_changed
            await self._apply(group)
            task_status.started()
            while True:
                await changed.wait()
                changed = self.ctx.flows_changed
                await self._apply(group)

    async def _apply(self, group: TaskGroup) -> None:
        wanted = bindings(self.ctx.flows)
        for name, source in self.running.items():
            source.bind(wanted.get(name, []))
        for name in wanted.keys() - self.running.keys():
            try:
                cls = trigger_source(name)
            except PluginError as exc:  # the loader reports it too; say it here once
                if name not in self._refused:
                    self._refused.add(name)
                    log.error("trigger source %r cannot start: %s", name, exc)
                continue
            source = cls(self.host)
            source.bind(wanted[name])
            self.running[name] = source
            await group.start(self._supervise, name, source, name=f"trigger source {name}")

    async def _supervise(
        self,
        name: str,
        source: TriggerSource,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        pause = RESTART_FIRST
        started = False

        class _Status:
            def started(self, value: object = None) -> None:
                nonlocal started
                if not started:
                    started = True
                    task_status.started()

        while True:
            try:
                await source.run(task_status=_Status())
                log.error("trigger source %r returned; starting it again in %gs", name, pause)
            except Exception:
                log.exception("trigger source %r failed; starting it again in %gs", name, pause)
            if not started:  # the service does not wait for a source that cannot start
                _Status().started()
            await anyio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)
