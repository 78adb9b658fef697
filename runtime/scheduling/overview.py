"""A flow as people read it: each trigger in words ("At 02:00, Monday through Friday (Europe/
Paris)", "when a file matching *.csv lands in /data/inbox"), its next scheduled instants, and
its settings. The JSON API's flow objects and the dashboard's home page are built from it."""

from __future__ import annotations

import functools
import heapq
from datetime import datetime
from typing import Any

from runtime import codec
from runtime.define.flow import Flow
from runtime.define.sources import EventTrigger, FlowTrigger, SourceTrigger
from runtime.define.triggers import MACROS, CronTrigger, EveryTrigger
from runtime.scheduling.agenda import triggers as time_triggers
from runtime.scheduling.firetimes import iso_utc
from runtime.scheduling.planner import preview


@functools.lru_cache(maxsize=1024)
def cron_words(expr: str) -> str:
    """A 5-field cron expression (or macro) in English, 24-hour clock: ``"At 02:00"``;
    the expression itself when cron-descriptor cannot read it."""
    from cron_descriptor import ExpressionDescriptor, Options

    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(MACROS.get(expr.strip(), expr), options).get_description())
    except Exception:  # noqa: BLE001  (cron-descriptor raises FormatError, and others)
        return f"cron {expr}"


def _every_words(seconds: float) -> str:
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    return f"Every {seconds:g} seconds"


def trigger_words(trigger: object) -> str:
    """One trigger of a flow in words, for people (``str(trigger)`` is the code form)."""
    if isinstance(trigger, CronTrigger):
        words = cron_words(trigger.expr)
        return words if trigger.tz == "UTC" else f"{words} ({trigger.tz})"
    if isinstance(trigger, EveryTrigger):
        return _every_words(trigger.interval.total_seconds())
    if isinstance(trigger, EventTrigger):
        return f"When the event {trigger.name!r} is sent"
    if isinstance(trigger, FlowTrigger):
        states = " or ".join(trigger.states)
        what = f"task {trigger.task!r} of flow {trigger.flow!r}" if trigger.task else trigger.flow
        return f"After a run of {what} ends {states}"
    if isinstance(trigger, SourceTrigger) and trigger.plugin == "files":
        folder = trigger.options.get("folder", "?")
        pattern = trigger.options.get("pattern", "*")
        return f"When a file matching {pattern} lands in {folder}"
    if isinstance(trigger, SourceTrigger):
        return f"From the {trigger.plugin!r} trigger source"
    return str(trigger)


def next_fires(flow: Flow, now: datetime, count: int) -> list[datetime]:
    """The next *count* instants any time trigger of *flow* fires after *now* (UTC)."""
    lists = [preview(spec, now, count) for spec in time_triggers(flow).values()]
    return list(heapq.merge(*lists))[:count]


def flow_overview(flow: Flow, now: datetime, *, upcoming: int = 3) -> dict[str, Any]:
    """*flow* as JSON-ready data: name, description, file, tasks in order, params (with their
    defaults), triggers (``kind``, ``text`` as in code, ``words``), ``schedule`` (the
    triggers' words joined, ``""`` for none), ``next_runs`` (ISO UTC), ``tz``, ``sla``
    (seconds or None), ``max_active_runs`` and ``max_concurrency``. Paused and the last runs
    come from the store, not from here."""
    described = [
        {**trigger.to_dict(), "text": str(trigger), "words": trigger_words(trigger)}
        for trigger in flow.triggers
    ]
    return {
        "name": flow.name,
        "description": flow.description,
        "file": str(flow.path) if flow.path else None,
        "tasks": list(flow.graph.order),
        "params": codec.loads(codec.encode(flow.params)),
        "triggers": described,
        "schedule": "; ".join(item["words"] for item in described),
        "next_runs": [iso_utc(instant) for instant in next_fires(flow, now, upcoming)],
        "tz": flow.tz,
        "sla": flow.sla,
        "max_active_runs": flow.max_active_runs,
        "max_concurrency": flow.max_concurrency,
    }
