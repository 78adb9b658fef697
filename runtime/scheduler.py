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

__all__ = ["MAX_WAIT", "TriggerPlan", "plan_flows", "plan_startup", "run_scheduler", "tick"]

log = logging.getLogger(f"sluiceway.{__name__}")

MAX_WAIT = 30.0  # seconds between passes at most, so a clock jump or suspend is noticed


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


def plan_flows(flows: Mapping[str, Flow], state: ScheduleState, now: datetime) -> list[TriggerPlan]:
    """Plan every time trigger of *flows* at *now* from the stored *state*; pure.

    :raises ScheduleError: for an invalid trigger or catch-up option (loaded flows have none)
    """
    out = []
    for name, flow in sorted(flows.items()):
        seen: set[str] = set()
        for spec in flow.triggers:
            key = str(spec)
            if key in seen:  # the same trigger twice makes the same runs: plan it once
                continue
            seen.add(key)
            last = state.cursors.get((name, key))
            if name in state.paused:
                out.append(TriggerPlan(flow, key, spec, last, Plan(cursor=last), True, None))
                continue
            plan = plan_ticks(spec, last, now, catchup=flow.catchup, max_catchup=flow.max_catchup)
            cursor = plan.cursor if plan.cursor != last else None
            if last is None and plan.cursor is None:
                cursor = now  # new, nothing due yet: downtime from now on is caught up
            out.append(TriggerPlan(flow, key, spec, last, plan, False, cursor))
    return out


async def plan_startup(store: Store, flows: Mapping[str, Flow], now: datetime) -> list[TriggerPlan]:
    """What the start-up pass would fire and skip at *now*, without writing anything."""
    state = await store.read(schedules.read_state)
    return plan_flows(flows, state, now)


async def tick(ctx: ServiceContext) -> datetime | None:
    """One pass: commit what is due for every unpaused flow; return the earliest next instant.

    :raises StoreError: when the runs and cursors cannot be committed (nothing was)
    """
    flows = ctx.flows
    now = ctx.clock.now()
    state = await ctx.store.read(schedules.read_state)
    plans: list[TriggerPlan] = []
    for name, flow in sorted(flows.items()):
        try:  # one flow's schedule is an isolation boundary: the others keep firing
            plans.extend(plan_flows({name: flow}, state, now))
        except SluicewayError:
            log.exception("flow=%s cannot plan its triggers", name)
    firings = [(p, f) for p in plans if (f := p.firing) is not None]
    made = await schedules.fire_batch(ctx.store, [f for _, f in firings], now)
    for (p, _), ids in zip(firings, made, strict=True):
        _report(p, ids)
    if any(made):
        ctx.wake_queue()
    upcoming = [p.plan.next for p in plans if not p.paused and p.plan.next is not None]
    return min(upcoming, default=None)


def _report(p: TriggerPlan, ids: list[int]) -> None:
    flow, plan = p.flow.name, p.plan
    if ids:
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
    """Fire the time triggers of ``ctx.flows`` until cancelled.

    Reports started once the first pass (the start-up catch-up) is committed; a store error
    in that pass is raised, later ones are logged and retried on the next pass.
    """
    started = False
    while True:
        changed = ctx.flows_changed  # a reload during the pass wakes the wait at once
        try:
            upcoming = await tick(ctx)
        except SluicewayError:
            if not started:
                raise
            log.exception("scheduler pass failed; retrying within %.0fs", MAX_WAIT)
            upcoming = None
        if not started:
            task_status.started()
            started = True
        wait = MAX_WAIT
        if upcoming is not None:
            wait = min(wait, max(0.0, (upcoming - ctx.clock.now()).total_seconds()))
        await _wait(ctx, wait, changed)


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
