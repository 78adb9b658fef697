"""The tick loop: turns time triggers into queued runs, exactly once, after the catch-up policy.

Each pass reads the stored cursors and paused flows, asks the pure planner what is due for
each trigger (:func:`plan_trigger`), commits the runs and the new cursors in one transaction
(:func:`runtime.store.cursors.fire_batch`), and wakes the run queue. The first pass, and the
first after a reload, plans every trigger; later ones plan only the triggers whose next instant
has come and read only their cursors (:class:`Agenda`, a heap), so a pass costs the same with
10 or 10,000 schedules. It then sleeps until the earliest next instant, a reload (the
``flows_changed`` event it is given), or :data:`MAX_WAIT`, whichever comes first: the sleep
runs on the monotonic clock while schedules are wall-clock, so a suspend or a clock step is
noticed within :data:`MAX_WAIT` and goes through the catch-up policy.

A trigger's cursor is the newest instant dealt with. A trigger seen for the first time, with
nothing due, stores the current time as its cursor, so downtime from then on is caught up.
A paused flow creates no runs and its cursors stay; unpaused, its policy decides (never a
flood: at most one run, or ``max_catchup`` with ``catchup="all"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from runtime import codec
from runtime.clock import Clock
from runtime.errors import SluicewayError
from runtime.scheduling.agenda import (
    Agenda,
    TriggerPlan,
    TriggerRef,
    plan_flows,
    plan_trigger,
    triggers,
)
from runtime.scheduling.planner import CatchUp
from runtime.store import cursors
from runtime.store.cursors import ScheduleState

if TYPE_CHECKING:
    from runtime.define.flow import Flow
    from runtime.define.triggers import TimeTrigger
    from runtime.store import Store

__all__ = ["LEAD", "MAX_WAIT", "plan_startup", "run_scheduler", "tick"]

log = logging.getLogger("sluiceway.runtime.scheduler")

MAX_WAIT = 30.0  # seconds between passes at most, so a clock jump or suspend is noticed
# a pass for an instant plans this long before it and commits at the instant: planning 1,000
# triggers takes about 10 ms, which then is not part of the fire latency
LEAD = 0.05


async def plan_startup(store: Store, flows: Mapping[str, Flow], now: datetime) -> list[TriggerPlan]:
    """What the start-up pass would fire and skip at *now*, without writing anything."""
    state = await store.read(cursors.read_state)
    return plan_flows(flows, state, now)


# --- a pass ---


@dataclass(frozen=True, slots=True)
class _Pass:
    """What a pass planned, to commit at its instant.

    :ivar flows: the flows it planned from
    :ivar agenda: the loop's agenda, ``None`` for a pass that plans every trigger
    :ivar held: the triggers it did not plan (paused, or failed): planned at the next pass
    """

    flows: Mapping[str, Flow]
    agenda: Agenda | None
    plans: list[TriggerPlan]
    held: set[TriggerRef]


async def tick(
    store: Store,
    clock: Clock,
    flows: Mapping[str, Flow],
    wake_queue: Callable[[], None],
    agenda: Agenda | None = None,
) -> datetime | None:
    """One pass at the clock's time: commit what is due for every unpaused flow of *flows*;
    return the earliest next instant.

    :param wake_queue: called once runs are committed, so that the run queue claims them
    :param agenda: kept by the loop between passes; ``None`` plans every trigger
    :raises StoreError: when the runs and cursors cannot be committed (nothing was)
    """
    now = clock.now()
    planned = await _plan_pass(store, flows, agenda, now)
    return await _commit_pass(store, wake_queue, planned, now)


async def _plan_pass(
    store: Store, flows: Mapping[str, Flow], agenda: Agenda | None, now: datetime
) -> _Pass:
    todo, state = await _todo(store, flows, agenda, now)
    plans: list[TriggerPlan] = []
    held: set[TriggerRef] = set()
    for key, flow, spec in todo:
        plan = None if key[0] in state.paused else _plan_one(key, flow, spec, state, now)
        if plan is None:  # paused (planned once unpaused; its cursor stays), or failed
            held.add(key)
            if agenda is not None:
                agenda.hold(key, flow, spec)
        else:
            plans.append(plan)
    return _Pass(flows, agenda, plans, held)


async def _todo(
    store: Store, flows: Mapping[str, Flow], agenda: Agenda | None, now: datetime
) -> tuple[list[tuple[TriggerRef, Flow, TimeTrigger]], ScheduleState]:
    """The triggers a pass at *now* plans, and the stored state it plans them from."""
    # cursors and pauses are written by ops, committed when their callers return: no need
    # to commit the engine's queued rows first (an fsync on the scheduler's path)
    if agenda is None or agenda.flows is not flows:
        if agenda is not None:
            agenda.flows = None  # stale until this pass is committed
            agenda.clear()
        state = await store.read(cursors.read_state, flush=False)
        every = [
            ((name, key), flow, spec)
            for name, flow in flows.items()
            for key, spec in triggers(flow).items()
        ]
        return every, state
    look, plan = agenda.take(now)
    if len(look) * 4 < len(agenda.waiting):
        state = await store.read(cursors.read_state_of, look, flush=False)
    else:  # most of them: one scan costs less than a lookup each
        state = await store.read(cursors.read_state, flush=False)
    todo = []
    for key in look:
        entry = agenda.waiting[key]
        if key in plan or state.cursors.get(key) != entry.last:
            todo.append((key, entry.flow, entry.spec))
    return todo, state


def _plan_one(
    key: TriggerRef, flow: Flow, spec: TimeTrigger, state: ScheduleState, now: datetime
) -> TriggerPlan | None:
    try:  # one flow's schedule is an isolation boundary: the others keep firing
        return plan_trigger(flow, key[1], spec, state, now)
    except SluicewayError:
        log.exception("flow=%s trigger=%s cannot be planned", key[0], key[1])
        return None


async def _commit_pass(
    store: Store, wake_queue: Callable[[], None], planned: _Pass, now: datetime
) -> datetime | None:
    """Commit the runs and cursors *planned*, at *now*; return the earliest next instant."""
    firings = [(p, f) for p in planned.plans if (f := p.firing) is not None]
    made = await cursors.fire_batch(store, [f for _, f in firings], now)
    for (p, _), ids in zip(firings, made, strict=True):
        _report(p, ids)
    if any(made):
        wake_queue()
    if planned.agenda is None:
        return min((p.plan.next for p in planned.plans if p.plan.next is not None), default=None)
    # a flow paused before the commit got no runs: checked next pass, planned again once
    # unpaused (a cursor-only move that did not land changes nothing worth a read)
    fired = {(p.flow.name, p.key) for p, f in firings if f.instants}
    return planned.agenda.remember(planned.flows, planned.plans, planned.held, fired)


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


# --- the loop ---


async def run_scheduler(
    store: Store,
    clock: Clock,
    flows: Callable[[], Mapping[str, Flow]],
    flows_changed: Callable[[], anyio.Event],
    wake_queue: Callable[[], None],
    *,
    lead: float = LEAD,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Fire the time triggers of ``flows()`` until cancelled; start it with ``tg.start``.

    Reports started once the first pass (the start-up catch-up) is committed. Queued runs
    are announced with *wake_queue*; a reload is noticed through *flows_changed*, a pause
    from another process at the next pass (and atomically when runs are committed).

    :param store: where the cursors are read and the runs and cursors committed
    :param clock: what the triggers are planned on, and what the loop sleeps on
    :param flows: the flows to schedule now; a reload swaps the mapping
    :param flows_changed: the event the next reload (or an unpause) sets, a new one after each
    :param wake_queue: called once runs are committed, so that the run queue claims them
    :param lead: a pass for an instant plans this many seconds before it and commits at the
        instant (default :data:`LEAD`); 0 plans at the instant
    :param task_status: set once the start-up pass is committed
    :raises StoreError: when the start-up pass cannot be committed; later failures are logged
        and the pass is retried within :data:`MAX_WAIT`
    """
    loop = _Loop(store, clock, wake_queue, lead)
    started = False
    at: datetime | None = None
    while True:
        changed = flows_changed()  # a reload during the pass wakes the wait at once
        try:
            upcoming = await loop.pass_at(flows(), at, changed)
        except SluicewayError:
            if not started:
                raise
            log.exception("scheduler pass failed; retrying within %.0fs", MAX_WAIT)
            upcoming = None
        if not started:
            task_status.started()
            started = True
        at = await loop.sleep_until(upcoming, changed)


class _Loop:
    """What :func:`run_scheduler` keeps between passes, and how it waits for the next."""

    def __init__(
        self, store: Store, clock: Clock, wake_queue: Callable[[], None], lead: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.wake_queue = wake_queue
        self.lead = lead
        self.agenda = Agenda()

    async def pass_at(
        self, flows: Mapping[str, Flow], at: datetime | None, changed: anyio.Event
    ) -> datetime | None:
        """A pass now; with *at*, a pass planned now for the instant *at* just ahead and
        committed when it comes. A reload (*changed*) while waiting for it drops the pass and
        returns *at*, to be planned again."""
        if at is None:
            return await tick(self.store, self.clock, flows, self.wake_queue, self.agenda)
        planned = await _plan_pass(self.store, flows, self.agenda, at)
        early = (at - self.clock.now()).total_seconds()
        if early > 0:
            await _wait(self.clock, early, changed)
        if changed.is_set():
            return at  # planned from flows that are gone: plan again, now
        return await _commit_pass(self.store, self.wake_queue, planned, self.clock.now())

    async def sleep_until(self, upcoming: datetime | None, changed: anyio.Event) -> datetime | None:
        """Sleep until the pass for the instant *upcoming* is due (at most :data:`MAX_WAIT`),
        or a reload; return the instant to plan ahead for, ``None`` to plan at the time."""
        lead = self.lead
        until = MAX_WAIT if upcoming is None else (upcoming - self.clock.now()).total_seconds()
        if until - lead >= MAX_WAIT:
            await _wait(self.clock, MAX_WAIT, changed)
        elif until > lead:
            await _wait(self.clock, until - lead, changed)
            return None if changed.is_set() else upcoming
        elif until > 0:
            return upcoming  # due within the lead: plan it now, commit when it comes
        else:
            await _wait(self.clock, 0.0, changed)
        return None


async def _wait(clock: Clock, seconds: float, changed: anyio.Event) -> None:
    """Sleep on *clock* for *seconds*, or until *changed* is set."""
    if changed.is_set():
        await anyio.lowlevel.checkpoint()
        return
    async with anyio.create_task_group() as tg:

        async def sleep() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        async def watch() -> None:
            await changed.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(sleep, name="scheduler sleep")
        tg.start_soon(watch, name="scheduler reload watch")
