"""What ``/metrics`` counts from the event bus: run ends, attempts, durations, schedule
lateness and the tasks running now.

The bus calls :meth:`BusRecorder.on_event` synchronously for every event of every run, on
the engine's hot path, so it does O(1) plain dictionary and list arithmetic and never awaits
or takes a lock (everything runs on the event loop's thread). prometheus-client's own
metric objects take a lock per update; they are built from these numbers at scrape time
instead (:mod:`runtime.service.metrics.collector`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runtime.engine.events import (
    CheckFailed,
    Event,
    RunEnded,
    RunStarted,
    TaskEnded,
    TaskRetrying,
    TaskStarted,
)

# seconds: ETL tasks and runs take from milliseconds (a check) to hours (a backfill load)
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600,
)  # fmt: skip
# seconds a scheduled fire started after its instant: the ticker's own delay is milliseconds;
# seconds to hours mean a full queue, max_active_runs or a service that was down
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600)
# seconds the event loop was late to wake a sleeper: under 10 ms is healthy
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Histogram:
    """A histogram with fixed bounds, updated in O(log buckets) without a lock."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal")
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Histogram:
        """A copy that later observations do not change."""
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.sum, other.count = self.sum, self.count
        return other

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, ``inf`` last."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class _LiveRun:
    """A run executing now, as far as the bus told: its start and its running units."""

    __slots__ = ("flow", "started", "units")

    def __init__(self, flow: str, started: datetime | None) -> None:
        self.flow = flow
        self.started = started
        self.units: set[str] = set()  # labels of units with an attempt running


class BusRecorder:
    """Counts what the bus says. Labels are the flow and the state only (never a run id).

    :ivar runs_ended: (flow, state) -> runs that ended so
    :ivar attempts: (flow, state) -> attempts that ended so (an attempt followed by a retry
        ended ``failed``); only attempts whose start this recorder saw
    :ivar checks_failed: (flow, severity) -> data-quality checks that failed
    :ivar task_durations, run_durations, lateness: flow -> histogram (seconds)
    """

    def __init__(self) -> None:
        self.runs_ended: Counter[tuple[str, str]] = Counter()
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.checks_failed: Counter[tuple[str, str]] = Counter()
        self.task_durations: dict[str, Histogram] = {}
        self.run_durations: dict[str, Histogram] = {}
        self.lateness: dict[str, Histogram] = {}
        self.live: dict[int, _LiveRun] = {}  # by run id; popped at the run's end
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            RunStarted: self._run_started,
            RunEnded: self._run_ended,
            TaskStarted: self._task_started,
            TaskRetrying: self._task_retrying,
            TaskEnded: self._task_ended,
            CheckFailed: self._check_failed,
        }

    def on_event(self, event: Event) -> None:
        """Bus subscriber: O(1), no await, no lock."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def running_tasks(self) -> Counter[str]:
        """Units with an attempt running now, by flow."""
        out: Counter[str] = Counter()
        for run in self.live.values():
            if run.units:
                out[run.flow] += len(run.units)
        return out

    # --- the handlers ---

    def _run_started(self, event: RunStarted) -> None:
        self.live[event.run_id] = _LiveRun(event.flow, event.ts)
        if event.scheduled is not None:
            late = max(0.0, (event.ts - event.scheduled).total_seconds())
            _histogram(self.lateness, event.flow, LATENESS_BUCKETS).observe(late)

    def _run_ended(self, event: RunEnded) -> None:
        self.runs_ended[(event.flow, str(event.state))] += 1
        run = self.live.pop(event.run_id, None)
        if run is not None and run.started is not None:
            took = max(0.0, (event.ts - run.started).total_seconds())
            _histogram(self.run_durations, event.flow, DURATION_BUCKETS).observe(took)

    def _task_started(self, event: TaskStarted) -> None:
        run = self.live.get(event.run_id)
        if run is None:  # its run started before this recorder listened
            run = self.live[event.run_id] = _LiveRun(event.flow, None)
        run.units.add(event.task)

    def _task_retrying(self, event: TaskRetrying) -> None:
        run = self.live.get(event.run_id)
        if run is not None and event.task in run.units:
            run.units.discard(event.task)
            self.attempts[(event.flow, "failed")] += 1

    def _task_ended(self, event: TaskEnded) -> None:
        run = self.live.get(event.run_id)
        # a unit that never ran (skipped, upstream_failed) or a mapped task's own end (its
        # instances ran) is not an attempt
        if run is None or event.task not in run.units:
            return
        run.units.discard(event.task)
        self.attempts[(event.flow, str(event.state))] += 1
        if event.duration is not None:
            took = max(0.0, event.duration)
            _histogram(self.task_durations, event.flow, DURATION_BUCKETS).observe(took)

    def _check_failed(self, event: CheckFailed) -> None:
        self.checks_failed[(event.flow, event.severity)] += 1


def _histogram(table: dict[str, Histogram], flow: str, bounds: tuple[float, ...]) -> Histogram:
    found = table.get(flow)
    if found is None:
        found = table[flow] = Histogram(bounds)
    return found
