"""A trigger host for the files source's tests: a real store and event bus, flows by name,
and what the source woke and reported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugins.triggers.files.spec import FilesSpec, resolve
from runtime.abc import Binding
from runtime.define.flow import Flow
from runtime.engine.events import EventBus
from runtime.store import Store

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_flow(name: str = "ingest", **params: Any) -> Flow:
    """A one-task flow with *params* as its defaults."""
    flow = Flow(name, params=params)

    @flow.task
    def work() -> None:
        return None

    return flow


def binding(folder: Path, flow: str = "ingest", **options: Any) -> Binding:
    """A files() trigger of *flow* on *folder* (absolute), as the service binds it."""
    opts = {"folder": str(folder), **options}
    key = "files(" + ", ".join(f"{k}={v!r}" for k, v in sorted(opts.items())) + ")"
    return Binding(flow, key, opts, folder.parent, "flows/ingest.py:3")


def spec_of(folder: Path, flow: str = "ingest", **options: Any) -> FilesSpec:
    return resolve(binding(folder, flow, **options))


class Host:
    """What the service gives a trigger source, over a real store (see runtime.abc)."""

    def __init__(self, store: Store, *flows: Flow, epoch: int = 1) -> None:
        self._store = store
        self._bus = EventBus()
        self.flows = {f.name: f for f in flows}
        self.epoch_id = epoch
        self.woken = 0
        self.reports: list[str] = []
        self.clock = AT

    @property
    def store(self) -> Store:
        return self._store

    @property
    def bus(self) -> EventBus:
        return self._bus

    @property
    def epoch(self) -> int:
        return self.epoch_id

    def now(self) -> datetime:
        return self.clock

    def flow(self, name: str) -> Flow | None:
        return self.flows.get(name)

    def wake_queue(self) -> None:
        self.woken += 1

    def report(self, binding: Binding | None, problem: str) -> None:
        where = f"{binding.flow}: " if binding else ""
        self.reports.append(where + problem)
