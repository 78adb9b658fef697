"""The tick loop: turns time triggers into queued runs, exactly once, after the catch-up policy.

Each pass reads the stored cursors and paused flows, asks the pure planner what is due for
every trigger (:func:`plan_flows`), commits the runs and the new cursors in one transaction
(:func:`runtime.store.schedules.fire_batch`), and wakes the run queue. It then sleeps until the
earliest next instant, a reload (``ctx.flows_changed``), or :data:`MAX_WAIT`, whichever comes
first: the sleep runs on the monotonic clock while schedules are wall-clock, so a suspend or a
clock step is noticed within :data:`MAX_WAIT` and goes through the catch-up policy.

A trigger's cursor is the newest instant dealt with. A trigger seen for the first time, with
nothing due, stores the current time as its cursor, so downtime from then on is caught up.
A paused flow creates no runs and its cursors stay; unpaused, its policy decides (never a
flood: at most one run, or ``max_catchup`` with ``catchup="all"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from runtime import codec
from runtime.errors import SluicewayError
from runtime.planner import CatchUp, Plan, plan_ticks
from runtime.store import schedules
from runtime.store.schedules import Firing, ScheduleState

if TYPE_CHECKING:
    # type-only: runtime.service imports this module to start the loop
    from runtime.flow import Flow
    from runtime.service import ServiceContext
    from runtime.store import Store
    from runtime.triggers import TimeTrigger

__all__ = [
    "MAX_WAIT",
    "TriggerPlan",
    "plan_flows",
    "plan_startup",
    "plan_trigger",
    "run_scheduler",
    "tick",
    "triggers",
]

log = logging.getLogger(f"sluiceway.{__name__}")

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
    state = await store.read(schedules.read_state)
    return plan_flows(flows, state, now)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A trigger planned before with nothing due: until *next*, planning it again from the
    same cursor would give the same empty plan, so a pass skips it (1,000 schedules that
    fire at different instants would otherwise each cost a full pass)."""

    flow: Flow  # a reload makes new Flow objects, and so plans again
    last: datetime
    next: datetime | None


async def tick(
    ctx: ServiceContext,
    waiting: dict[tuple[str, str], _Waiting] | None = None,
    *,
    at: datetime | None = None,
) -> datetime | None:
    """One pass: commit what is due for every unpaused flow; return the earliest next instant.

    :param waiting: kept by the loop between passes; ``None`` plans every trigger
    :param at: plan for this instant (just ahead) and commit when it comes; a reload while
        waiting for it drops the pass and returns *at*, to be planned again
    :raises StoreError: when the runs and cursors cannot be committed (nothing was)
    """
    flows = ctx.flows
    changed = ctx.flows_changed
    now = at or ctx.clock.now()
    # cursors and pauses are written by ops, committed when their callers return: no need
    # to commit the engine's queued rows first (an fsync on the scheduler's path)
    state = await ctx.store.read(schedules.read_state, flush=False)
    memo = {} if waiting is None else waiting
    plans: list[TriggerPlan] = []
    upcoming: list[datetime] = []
    for name, flow in flows.items():
        if name in state.paused:
            continue
        try:  # one flow's schedule is an isolation boundary: the others keep firing
            for key, spec in triggers(flow).items():
                known = memo.get((name, key))
                if (
                    known is not None
                    and known.flow is flow
                    and known.last == state.cursors.get((name, key))
                    and (known.next is None or known.next > now)
                ):
                    if known.next is not None:
                        upcoming.append(known.next)
                    continue
                plans.append(plan_trigger(flow, key, spec, state, now))
        except SluicewayError:
            log.exception("flow=%s cannot plan its triggers", name)
    firings = [(p, f) for p in plans if (f := p.firing) is not None]
    if at is not None:
        early = (at - ctx.clock.now()).total_seconds()
        if early > 0:
            await _wait(ctx, early, changed)
        if changed.is_set():
            return at  # planned from flows that are gone: plan again, now
        now = ctx.clock.now()
    made = await schedules.fire_batch(ctx.store, [f for _, f in firings], now)
    for (p, _), ids in zip(firings, made, strict=True):
        _report(p, ids)
    if any(made):
        ctx.wake_queue()
    for p in plans:
        if p.plan.next is not None:
            upcoming.append(p.plan.next)
        last = p.last if p.cursor is None else p.cursor
        if waiting is not None and last is not None:
            # checked against the stored cursor next pass: a write that did not land (the
            # flow was paused meanwhile, a racer moved it further) plans again
            waiting[(p.flow.name, p.key)] = _Waiting(p.flow, last, p.plan.next)
    if waiting is not None:
        for gone in [k for k in waiting if k[0] not in flows]:
            del waiting[gone]
    return min(upcoming, default=None)


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
    waiting: dict[tuple[str, str], _Waiting] = {}
    at: datetime | None = None
    while True:
        changed = ctx.flows_changed  # a reload during the pass wakes the wait at once
        try:
            upcoming = await tick(ctx, waiting, at=at)
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
