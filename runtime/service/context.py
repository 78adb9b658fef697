"""What the service's parts share: config, runner, the flows of the latest reload, two events."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from runtime.abc import SourceMetric
from runtime.clock import Clock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.runner import Runner
from runtime.store import Store


def no_trigger_metrics() -> Mapping[str, Sequence[SourceMetric]]:
    """The trigger sources' metrics when no sources run (the API served alone, in tests)."""
    return {}


@dataclass(slots=True)
class ServiceContext:
    """What the service's children share.

    :ivar flows: the flows that can run now, by name; a reload replaces the mapping (runs that
        already started keep the Flow object they started with)
    :ivar epoch: this process's epoch id; runs it claims carry it, so a restart finds orphans
    :ivar flows_changed: set by the next reload (a new event after each)
    :ivar queue_changed: set when a run was queued or ended in this process (a new event
        after each)
    :ivar schedule_changed: set by a reload and by an unpause in this process (a new event
        after each): the scheduler plans again now, not at its next instant
    :ivar stopping: the service is shutting down: no run starts any more
    :ivar trigger_metrics: each running trigger source's :meth:`TriggerSource.metrics`, by
        plugin name (set by :class:`runtime.service.sources.Sources`), for ``/metrics``
    :ivar ready: the flows are loaded, recovery is done and every feeder started (what
        ``GET /readyz`` and systemd's READY=1 say)
    :ivar waiting_for: what the service is waiting for while not ready: ``recovery``,
        ``start`` (its feeders are starting), ``stopping``
    """

    config: Config
    runner: Runner
    flows: Mapping[str, Flow]
    epoch: int
    flows_changed: anyio.Event = field(default_factory=anyio.Event)
    queue_changed: anyio.Event = field(default_factory=anyio.Event)
    schedule_changed: anyio.Event = field(default_factory=anyio.Event)
    stopping: bool = False
    ready: bool = False
    waiting_for: str = "recovery"
    alerts: Any = None  # the AlertHub (runtime.service.alerts), when the service has one
    trigger_metrics: Callable[[], Mapping[str, Sequence[SourceMetric]]] = no_trigger_metrics

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
        self.wake_scheduler()

    def wake_scheduler(self) -> None:
        """The schedule state changed here (an unpause): the scheduler plans again now."""
        self.schedule_changed.set()
        self.schedule_changed = anyio.Event()

    def wake_queue(self) -> None:
        """A run was queued in this process: claim it now instead of at the next poll."""
        self.queue_changed.set()
        self.queue_changed = anyio.Event()
