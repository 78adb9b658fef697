"""What a Flow derives from its declarations: its triggers by kind, and the problems of its
alert routes (kept out of flow.py, which holds the declaring)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.alerting import AlertRoute, parse_destination
from runtime.define.sources import EventTrigger, FlowTrigger, SourceTrigger
from runtime.define.triggers import CronTrigger, EveryTrigger
from runtime.registry import PluginError, notifier

__all__ = ["TriggerViews", "alert_problems"]


class TriggerViews:
    """The triggers of a flow by kind (a mixin of :class:`runtime.define.flow.Flow`)."""

    triggers: tuple[Any, ...]

    @property
    def time_triggers(self) -> tuple[CronTrigger | EveryTrigger, ...]:
        """The ``cron()`` and ``every()`` triggers: what the scheduler plans."""
        return tuple(t for t in self.triggers if isinstance(t, CronTrigger | EveryTrigger))

    @property
    def sources(self) -> tuple[SourceTrigger, ...]:
        """The triggers served by trigger-source plugins (``files()``, ``source()``)."""
        return tuple(t for t in self.triggers if isinstance(t, SourceTrigger))

    @property
    def events(self) -> tuple[EventTrigger, ...]:
        """The ``on_event()`` triggers."""
        return tuple(t for t in self.triggers if isinstance(t, EventTrigger))

    @property
    def upstreams(self) -> tuple[FlowTrigger, ...]:
        """The ``on_flow()`` triggers."""
        return tuple(t for t in self.triggers if isinstance(t, FlowTrigger))


def alert_problems(routes: Iterable[AlertRoute]) -> list[str]:
    """Routes of a flow naming a notifier plugin that is not installed (whether the config
    has the destination is checked by the service, which reads the config)."""
    found = []
    for route in routes:
        for dest in route.to:
            try:
                notifier(parse_destination(dest)[0])
            except PluginError as exc:
                found.append(f"{route.where}: alerts: {dest}: {exc}")
    return found
