"""Recovery: the runs an earlier process left running are resumed, at start or once their
flow loads."""

from __future__ import annotations

import logging

from runtime.define.flow import Flow
from runtime.service.context import ServiceContext
from runtime.service.runs import ActiveRuns
from runtime.states import RunState
from runtime.store import queries
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.service")


class Recovery:
    """Finds the orphans of earlier processes (by epoch, not heartbeat) and resumes them.

    An orphan whose flow is not loaded (its file is broken or gone) waits, with that reason,
    and is resumed by the first pass of the queue after a reload loads it.
    """

    def __init__(self, ctx: ServiceContext, runs: ActiveRuns) -> None:
        self.ctx = ctx
        self.runs = runs
        self.orphans: dict[int, str] = {}  # runs to resume once their flow loads: flow name

    async def recover(self) -> None:
        """Resume the runs an earlier process left running; those of unloaded flows wait."""
        orphans = await self.ctx.store.read(queries.runs_to_recover, self.ctx.epoch)
        resumed = 0
        for run_id, name in orphans:
            flow = self.ctx.flows.get(name)
            if flow is None:
                reason = f"waiting: flow {name!r} is not loaded"
                log.error(
                    "run=%s flow=%s cannot resume: the flow is not loaded; it resumes when the "
                    "flow loads",
                    run_id,
                    name,
                )
                self.orphans[run_id] = name
                self.ctx.store.put_run(RunRow(run_id, RunState.RUNNING, wait_reason=reason))
                continue
            await self._resume(flow, run_id)  # committed before READY: the takeover is on record
            resumed += 1
        if orphans:
            waiting = ""
            if self.orphans:
                names = sorted(set(self.orphans.values()))
                waiting = f"; {len(self.orphans)} run(s) wait for their flow to load: {names}"
            log.info("recovery: %d run(s) resumed%s", resumed, waiting)

    async def resume_loaded(self) -> None:
        """Resume the orphans whose flow a reload has loaded since."""
        for run_id, name in list(self.orphans.items()):
            flow = self.ctx.flows.get(name)
            if flow is not None and not self.ctx.stopping:
                del self.orphans[run_id]
                log.info("run=%s flow=%s: the flow is loaded now", run_id, name)
                await self._resume(flow, run_id)

    async def _resume(self, flow: Flow, run_id: int) -> None:
        # the interrupted attempts are recorded and the run taken over before it starts
        await self.ctx.store.mark_interrupted(run_id, self.ctx.epoch, self.ctx.clock.now())
        # a resumed run was admitted before the restart: it does not wait its turn again
        self.ctx.runner.limits.force_admit_run(flow.name, flow.max_active_runs)
        self.runs.start(flow, run_id)
