"""The tick loop: turns time triggers into queued runs, exactly once, after the catch-up policy.

Each pass reads the stored cursors and paused flows, asks the pure planner what is due for
each trigger (:func:`plan_trigger`), commits the runs and the new cursors in one transaction
(:func:`runtime.store.cursors.fire_batch`), and wakes the run queue. The first pass, and the
first after a reload, plans every trigger; later ones plan only the triggers whose next instant
has come and read only their cursors (:class:`Agenda`, a heap), so a pass costs the same with
10 or 10,000 schedules. It then sleeps until the
earliest next instant, a reload (``ctx.flows_changed``), or :data:`MAX_WAIT`, whichever comes
first: the sleep runs on the monotonic clock while schedules are wall-clock, so a suspend or a
clock step is noticed within :data:`MAX_WAIT` and goes through the catch-up policy.

A trigger's cursor is the newest instant dealt with. A trigger seen for the first time, with
nothing due, stores the current time as its cursor, so downtime from then on is caught up.
A paused flow creates no runs and its cursors stay; unpaused, its policy decides (never a
flood: at most one run, or ``max_catchup`` with ``catchup="all"``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from runtime import codec
from runtime.errors import SluicewayError
from runtime.scheduling.planner import CatchUp, Plan, plan_ticks
from runtime.store import cursors
from runtime.store.cursors import Firing, ScheduleState

if TYPE_CHECKING:
    # type-only: runtime.service.serve imports this module to start the loop
    from runtime.define.flow import Flow
    from runtime.define.triggers import TimeTrigger
    from runtime.service.serve import ServiceContext
    from runtime.store import Store

__all__ = [
    "MAX_WAIT",
    "Agenda",
    "TriggerPlan",
    "plan_flows",
    "plan_startup",
    "plan_trigger",
    "run_scheduler",
    "tick",
    "triggers",
]

log = logging.getLogger("sluiceway.runtime.scheduler")

MAX_WAIT = 30.0  # seconds between passes at most, so a clock jump or suspend is noticed
# a pass for an instant plans this long before it and commits at the instant: planning 1,000
# triggers takes about 10 ms, which then is not part of the fire latency
LEAD = 0.05


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
    for spec in flow.triggers:
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


async def plan_startup(store: Store, flows: Mapping[str, Flow], now: datetime) -> list[TriggerPlan]:
    """What the start-up pass would fire and skip at *now*, without writing anything."""
    state = await store.read(cursors.read_state)
    return plan_flows(flows, state, now)


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
        self.waiting: dict[tuple[str, str], _Waiting] = {}
        self.heap: list[tuple[datetime, int, tuple[str, str]]] = []
        self.held: set[tuple[str, str]] = set()  # came due while paused, or failed to plan
        self.check: set[tuple[str, str]] = set()  # written by the last pass
        self._seq = itertools.count()

    def clear(self) -> None:
        self.waiting.clear()
        self.heap.clear()
        self.held.clear()
        self.check.clear()

    def wait(self, key: tuple[str, str], plan: TriggerPlan) -> None:
        """Remember *plan*, the newest plan of trigger *key*, until its next instant."""
        last = plan.last if plan.cursor is None else plan.cursor
        entry = _Waiting(plan.flow, plan.spec, last, plan.plan.next, next(self._seq))
        self.waiting[key] = entry
        if entry.next is not None:
            heapq.heappush(self.heap, (entry.next, entry.seq, key))

    def _current(self, item: tuple[datetime, int, tuple[str, str]]) -> bool:
        entry = self.waiting.get(item[2])
        return entry is not None and entry.seq == item[1]

    def pop_due(self, now: datetime) -> set[tuple[str, str]]:
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


async def tick(
    ctx: ServiceContext,
    agenda: Agenda | None = None,
    *,
    at: datetime | None = None,
) -> datetime | None:
    """One pass: commit what is due for every unpaused flow; return the earliest next instant.

    :param agenda: kept by the loop between passes; ``None`` plans every trigger
    :param at: plan for this instant (just ahead) and commit when it comes; a reload while
        waiting for it drops the pass and returns *at*, to be planned again
    :raises StoreError: when the runs and cursors cannot be committed (nothing was)
    """
    flows = ctx.flows
    changed = ctx.flows_changed
    now = at or ctx.clock.now()
    held: set[tuple[str, str]] = set()
    # cursors and pauses are written by ops, committed when their callers return: no need
    # to commit the engine's queued rows first (an fsync on the scheduler's path)
    if agenda is None or agenda.flows is not flows:
        state = await ctx.store.read(cursors.read_state, flush=False)
        todo = [
            ((name, key), flow, spec)
            for name, flow in flows.items()
            for key, spec in triggers(flow).items()
        ]
        if agenda is not None:
            agenda.flows = None  # stale until this pass is committed
            agenda.clear()
    else:
        agenda.flows = None  # stale until this pass is committed
        due = agenda.pop_due(now)
        again, agenda.held = agenda.held, set()
        check, agenda.check = agenda.check, set()
        keys = due | again | check
        if len(keys) * 4 < len(agenda.waiting):
            state = await ctx.store.read(cursors.read_state_of, keys, flush=False)
        else:  # most of them: one scan costs less than a lookup each
            state = await ctx.store.read(cursors.read_state, flush=False)
        todo = []
        for key in keys:
            entry = agenda.waiting[key]
            if key in due or key in again or state.cursors.get(key) != entry.last:
                todo.append((key, entry.flow, entry.spec))
    plans: list[TriggerPlan] = []
    for key, flow, spec in todo:
        if key[0] in state.paused:
            held.add(key)  # planned once unpaused; its cursor stays
            if agenda is not None and key not in agenda.waiting:
                agenda.waiting[key] = _Waiting(flow, spec, None, None, -1)
            continue
        try:  # one flow's schedule is an isolation boundary: the others keep firing
            plans.append(plan_trigger(flow, key[1], spec, state, now))
        except SluicewayError:
            log.exception("flow=%s trigger=%s cannot be planned", key[0], key[1])
            held.add(key)
            if agenda is not None and key not in agenda.waiting:
                agenda.waiting[key] = _Waiting(flow, spec, None, None, -1)
    firings = [(p, f) for p in plans if (f := p.firing) is not None]
    if at is not None:
        early = (at - ctx.clock.now()).total_seconds()
        if early > 0:
            await _wait(ctx, early, changed)
        if changed.is_set():
            return at  # planned from flows that are gone: plan again, now
        now = ctx.clock.now()
    made = await cursors.fire_batch(ctx.store, [f for _, f in firings], now)
    for (p, _), ids in zip(firings, made, strict=True):
        _report(p, ids)
    if any(made):
        ctx.wake_queue()
    if agenda is None:
        return min((p.plan.next for p in plans if p.plan.next is not None), default=None)
    for p in plans:
        agenda.wait((p.flow.name, p.key), p)
    agenda.held = held
    # a flow paused before the commit got no runs: checked next pass, planned again once
    # unpaused (a cursor-only move that did not land changes nothing worth a read)
    agenda.check = {(p.flow.name, p.key) for p, f in firings if f.instants}
    agenda.flows = flows
    return agenda.next()


def _report(p: TriggerPlan, ids: list[int]) -> None:
    flow, plan = p.flow.name, p.plan
    if ids and log.isEnabledFor(logging.INFO):  # the joins cost more than the line
        log.info(
            "flow=%s trigger=%s queued run=%s scheduled %s",
            flow,
            p.key,
            ",".join(map(str, ids)),
            ",".join(codec.iso(t) or "" for t in plan.fire),
        )
    if len(ids) < len(plan.fire):
        log.debug(
            "flow=%s trigger=%s %d instant(s) already had their run",
            flow,
            p.key,
            len(plan.fire) - len(ids),
        )
    if plan.skipped:
        # "all" skips only beyond max_catchup: worth a warning; "latest"/"none" skip by design
        level = logging.WARNING if p.flow.catchup == CatchUp.ALL else logging.INFO
        log.log(
            level,
            "flow=%s trigger=%s skipped %d missed instant(s) from %s to %s "
            "(catchup=%s, max_catchup=%d)",
            flow,
            p.key,
            plan.skipped,
            codec.iso(plan.first_skipped),
            codec.iso(plan.last_skipped),
            p.flow.catchup,
            p.flow.max_catchup,
        )


async def run_scheduler(
    ctx: ServiceContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Fire the time triggers of ``ctx.flows`` until cancelled; start it with ``tg.start``.

    Reports started once the first pass (the start-up catch-up) is committed. Queued runs
    are announced with ``ctx.wake_queue()``; a reload is noticed through ``ctx.flows_changed``,
    a pause from another process at the next pass (and atomically when runs are committed).

    :param ctx: the service's shared state: flows, store and clock
    :param task_status: set once the start-up pass is committed
    :raises StoreError: when the start-up pass cannot be committed; later failures are logged
        and the pass is retried within :data:`MAX_WAIT`
    """
    started = False
    agenda = Agenda()
    at: datetime | None = None
    while True:
        changed = ctx.flows_changed  # a reload during the pass wakes the wait at once
        try:
            upcoming = await tick(ctx, agenda, at=at)
        except SluicewayError:
            if not started:
                raise
            log.exception("scheduler pass failed; retrying within %.0fs", MAX_WAIT)
            upcoming = None
        if not started:
            task_status.started()
            started = True
        at = None
        until = MAX_WAIT if upcoming is None else (upcoming - ctx.clock.now()).total_seconds()
        if until - LEAD >= MAX_WAIT:
            await _wait(ctx, MAX_WAIT, changed)
        elif until > LEAD:
            await _wait(ctx, until - LEAD, changed)
            at = None if changed.is_set() else upcoming
        elif until > 0:
            at = upcoming  # due within the lead: plan it now, commit when it comes
        else:
            await _wait(ctx, 0.0, changed)


async def _wait(ctx: ServiceContext, seconds: float, changed: anyio.Event) -> None:
    """Sleep on the context's clock for *seconds*, or until *changed* is set."""
    if changed.is_set():
        await anyio.lowlevel.checkpoint()
        return
    async with anyio.create_task_group() as tg:

        async def sleep() -> None:
            await ctx.clock.sleep(seconds)
            tg.cancel_scope.cancel()

        async def watch() -> None:
            await changed.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(sleep, name="scheduler sleep")
        tg.start_soon(watch, name="scheduler reload watch")
