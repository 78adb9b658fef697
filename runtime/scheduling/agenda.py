"""What a pass of the tick loop decides per trigger, and what the loop keeps between passes.

Pure: no I/O, no clock reads, no awaits. :func:`plan_trigger` turns one trigger's stored
cursor into a :class:`TriggerPlan`; the :class:`Agenda` remembers every trigger's next instant,
so that a pass plans only the triggers that are due (:mod:`runtime.scheduling.ticker` reads
the cursors, commits the plans and sleeps).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from runtime.scheduling.planner import Plan, plan_ticks
from runtime.store.cursors import Firing, ScheduleState

if TYPE_CHECKING:
    from runtime.define.flow import Flow
    from runtime.define.triggers import TimeTrigger

__all__ = ["Agenda", "TriggerPlan", "TriggerRef", "plan_flows", "plan_trigger", "triggers"]

TriggerRef = tuple[str, str]  # one trigger of one flow: (flow name, trigger key)


@dataclass(frozen=True, slots=True)
class TriggerPlan:
    """What one pass decided for one trigger of one flow.

    :ivar flow: the flow
    :ivar key: the trigger's key in the store, ``str(spec)``
    :ivar spec: the trigger
    :ivar last: the stored cursor the plan started from, ``None`` for a new trigger
    :ivar plan: the planner's answer (empty when the flow is paused)
    :ivar paused: the flow is paused: nothing fires and the cursor stays
    :ivar cursor: the cursor to store, ``None`` when it does not move
    """

    flow: Flow
    key: str
    spec: TimeTrigger
    last: datetime | None
    plan: Plan
    paused: bool
    cursor: datetime | None

    @property
    def firing(self) -> Firing | None:
        """What to commit for this trigger, ``None`` when nothing changes."""
        if self.cursor is None:
            return None
        return Firing(self.flow, self.key, self.plan.fire, self.cursor)


def triggers(flow: Flow) -> dict[str, TimeTrigger]:
    """A flow's time triggers by key, ``str(spec)``; the same trigger twice makes the same
    runs, so it counts once."""
    out: dict[str, TimeTrigger] = {}
    for spec in flow.time_triggers:
        out.setdefault(str(spec), spec)
    return out


def plan_trigger(
    flow: Flow, key: str, spec: TimeTrigger, state: ScheduleState, now: datetime
) -> TriggerPlan:
    """Plan one trigger of *flow* at *now* from the stored *state*; pure.

    :raises ScheduleError: for an invalid trigger or catch-up option (loaded flows have none)
    """
    last = state.cursors.get((flow.name, key))
    if flow.name in state.paused:
        return TriggerPlan(flow, key, spec, last, Plan(cursor=last), True, None)
    plan = plan_ticks(spec, last, now, catchup=flow.catchup, max_catchup=flow.max_catchup)
    cursor = plan.cursor if plan.cursor != last else None
    if last is None and plan.cursor is None:
        cursor = now  # new, nothing due yet: downtime from now on is caught up
    return TriggerPlan(flow, key, spec, last, plan, False, cursor)


def plan_flows(flows: Mapping[str, Flow], state: ScheduleState, now: datetime) -> list[TriggerPlan]:
    """Plan every time trigger of *flows* at *now* from the stored *state*; pure."""
    return [
        plan_trigger(flow, key, spec, state, now)
        for _, flow in sorted(flows.items())
        for key, spec in triggers(flow).items()
    ]


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A trigger planned before: with nothing due until *next*, planning it again from the
    same cursor would give the same empty plan, so a pass leaves it alone until then (1,000
    schedules that fire at different instants would otherwise each cost a full pass)."""

    flow: Flow
    spec: TimeTrigger
    last: datetime | None  # the cursor it was planned from, or the one its pass stored
    next: datetime | None
    seq: int  # its entry in the heap; older entries of the same trigger are stale


class Agenda:
    """What the tick loop keeps between passes: every trigger's next instant, in a heap.

    A pass then plans only the triggers that are due and reads only their stored cursors, so
    its cost does not grow with the number of schedules (before, every pass read every
    cursor and went over every trigger: with N schedules at different instants, N passes an
    hour, each O(N)). Also re-read each pass: the triggers whose runs the last pass made (a
    flow paused before the commit gets none and its cursor stays: the stored cursor then
    differs and it is planned again), the triggers of paused flows that came due (planned
    once unpaused), and the paused flows themselves.

    A pass that cannot trust it (the first, after a reload, after a pass that failed or was
    dropped) plans every trigger from every stored cursor, as a pass without one does.
    """

    def __init__(self) -> None:
        self.flows: Mapping[str, Flow] | None = None  # what it was built from; None: stale
        self.waiting: dict[TriggerRef, _Waiting] = {}
        self.heap: list[tuple[datetime, int, TriggerRef]] = []
        self.held: set[TriggerRef] = set()  # came due while paused, or failed to plan
        self.check: set[TriggerRef] = set()  # written by the last pass
        self._seq = itertools.count()

    def clear(self) -> None:
        self.waiting.clear()
        self.heap.clear()
        self.held.clear()
        self.check.clear()

    def take(self, now: datetime) -> tuple[set[TriggerRef], set[TriggerRef]]:
        """Begin a pass at *now*: the triggers to look at, and those of them to plan whatever
        their stored cursor (due, or held back); the others are planned only when their
        stored cursor differs from the one they were planned from."""
        self.flows = None  # stale until this pass is committed
        plan = self.pop_due(now) | self.held
        look = plan | self.check
        self.held, self.check = set(), set()
        return look, plan

    def hold(self, key: TriggerRef, flow: Flow, spec: TimeTrigger) -> None:
        """Keep trigger *key*, not planned by this pass (paused, or failed), for the next."""
        if key not in self.waiting:
            self.waiting[key] = _Waiting(flow, spec, None, None, -1)

    def wait(self, key: TriggerRef, plan: TriggerPlan) -> None:
        """Remember *plan*, the newest plan of trigger *key*, until its next instant."""
        last = plan.last if plan.cursor is None else plan.cursor
        entry = _Waiting(plan.flow, plan.spec, last, plan.plan.next, next(self._seq))
        self.waiting[key] = entry
        if entry.next is not None:
            heapq.heappush(self.heap, (entry.next, entry.seq, key))

    def remember(
        self,
        flows: Mapping[str, Flow],
        plans: Sequence[TriggerPlan],
        held: set[TriggerRef],
        fired: set[TriggerRef],
    ) -> datetime | None:
        """End a pass over *flows* once committed; return the earliest next instant.

        :param held: the triggers the pass did not plan, to plan at the next
        :param fired: the triggers whose runs the pass made, to check at the next
        """
        for p in plans:
            self.wait((p.flow.name, p.key), p)
        self.held = held
        self.check = fired
        self.flows = flows
        return self.next()

    def _current(self, item: tuple[datetime, int, TriggerRef]) -> bool:
        entry = self.waiting.get(item[2])
        return entry is not None and entry.seq == item[1]

    def pop_due(self, now: datetime) -> set[TriggerRef]:
        """Take the triggers whose next instant is at or before *now* off the heap."""
        due = set()
        heap = self.heap
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)
            if self._current(item):
                due.add(item[2])
        return due

    def next(self) -> datetime | None:
        """The earliest next instant of a trigger that waits in the heap."""
        heap = self.heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None
