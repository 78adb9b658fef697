"""What the live stream remembers of recent runs: the latest run frame and task frames of each
run that is active or just ended, replayed to a client when it connects.

A page is rendered from the store, then its script opens the stream: whatever happened in
between (the run started, a task ended) would otherwise be lost until the next change. The
bus is newer than the store (the writer commits a moment later), so the memory is kept from
the bus itself, as the frames the clients get.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.engine.events import Event, RunEnded, TaskEvent
from runtime.service.api.sse import Frame


@dataclass(slots=True)
class Memo:
    """One run's latest frames: its own, and per task label (``True``: a mapped instance)."""

    flow: str
    run: bytes | None = None
    tasks: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    ended_at: float | None = None  # monotonic


class RecentRuns:
    """The latest frames of the last *keep* runs the bus spoke of; a run that ended more than
    *window* seconds ago is not replayed any more (a page rendered since shows its end)."""

    def __init__(
        self, keep: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep = keep
        self.window = window
        self.clock = clock
        self.runs: OrderedDict[int, Memo] = OrderedDict()

    def note(self, event: Event, frame: Frame) -> None:
        """Remember *frame*, the latest of its run or task (from the bus subscriber)."""
        memo = self.runs.get(event.run_id)
        if memo is None:
            memo = self.runs[event.run_id] = Memo(event.flow)
            while len(self.runs) > self.keep:
                self.runs.popitem(last=False)
        if isinstance(event, TaskEvent):
            memo.tasks[event.task] = (frame.data, event.index is not None)
            return
        memo.run = frame.data
        if isinstance(event, RunEnded):
            memo.ended_at = self.clock()

    def replay(self, *, run: int | None, flow: str | None, cap: int) -> list[bytes]:
        """The frames a new client should see first, at most *cap*: for one run, its frame and
        its tasks' (instances too if they fit); for a flow, its recent runs and their tasks;
        for everything, the recent runs' own frames."""
        now = self.clock()

        def fresh(memo: Memo) -> bool:
            return memo.ended_at is None or now - memo.ended_at <= self.window

        out: list[bytes] = []
        if run is not None:
            memo = self.runs.get(run)
            if memo is None or not fresh(memo):
                return []
            every = len(memo.tasks) + 1 <= cap
            out = [memo.run] if memo.run is not None else []
            out += [data for data, instance in memo.tasks.values() if every or not instance]
            return out[:cap]
        for memo in self.runs.values():
            if not fresh(memo) or (flow is not None and memo.flow != flow):
                continue
            if memo.run is not None:
                out.append(memo.run)
            if flow is not None:
                out += [data for data, instance in memo.tasks.values() if not instance]
            if len(out) >= cap:
                break
        return out[:cap]
