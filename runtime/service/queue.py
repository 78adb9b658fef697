"""The service's run queue: claim queued runs as slots allow, pass cancel requests on, and
say why the runs of a flow wait."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence

import anyio
from anyio.abc import TaskStatus

from runtime.define.flow import Flow
from runtime.engine.runner import Runner
from runtime.errors import SluicewayError
from runtime.service.context import ServiceContext
from runtime.service.recovery import Recovery
from runtime.service.runs import ActiveRuns
from runtime.store import queries, queue
from runtime.store.cursors import paused_flows

log = logging.getLogger("sluiceway.runtime.service")

QUEUE_POLL = 0.25  # how soon a run queued by another process (the CLI) is picked up
QUEUE_BATCH = 1000  # most runs of one flow claimed in one pass


class RunQueue:
    """Claims queued runs (from the scheduler, the CLI, another process) and starts them."""

    def __init__(self, ctx: ServiceContext, runs: ActiveRuns, recovery: Recovery) -> None:
        self.ctx = ctx
        self.runs = runs
        self.recovery = recovery
        self.waiting_said: dict[str, str] = {}  # flow name: why its queued runs wait

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Make a pass whenever a run is queued or ends here, and every :data:`QUEUE_POLL`
        for the runs and cancel requests of other processes; until cancelled."""
        task_status.started()
        while True:
            changed = self.ctx.queue_changed
            try:
                await self._pass()
            except SluicewayError as exc:  # a busy or failing disk: report, keep serving
                log.error("run queue: %s; trying again", exc)
            with anyio.move_on_after(QUEUE_POLL):
                await changed.wait()

    async def _pass(self) -> None:
        await self.recovery.resume_loaded()
        await self._claim()
        requested = await self.ctx.store.read(queries.cancel_requests, list(self.runs.handles))
        for run_id in requested:
            self.runs.cancel(run_id)

    async def _claim(self) -> None:
        """Claim the oldest queued runs of every flow that can start some now.

        Picked per flow, in one read: a flow that cannot start runs (not loaded, paused, at
        ``max_active_runs``) costs one index seek and a wait reason for the flow, however long
        its backlog, and never holds back the runs of another flow.
        """
        runner = self.ctx.runner
        flows = self.ctx.flows  # this pass's view; a reload wakes the queue for another pass
        free = {
            name: _free_run_slots(runner, flow)
            for name, flow in flows.items()
            if flow.max_active_runs is not None
        }
        names, paused, picked = await self.ctx.store.read(_queue_pass, flows, free, self.ctx.epoch)
        reasons: dict[str, str] = {}
        starting: list[tuple[Flow, int]] = []
        for name in names:
            flow = flows.get(name)
            if flow is None:
                reasons[name] = f"waiting: flow {name!r} is not loaded"
            elif name in paused:
                reasons[name] = f"waiting: flow {name!r} is paused"
            elif not self._admit(flow, picked.get(name, ()), starting):
                reasons[name] = f"waiting: max_active_runs={flow.max_active_runs} reached"
        self._say_waiting(reasons)
        if starting:
            await self._start_claimed(starting)

    def _admit(self, flow: Flow, picked: Sequence[int], starting: list[tuple[Flow, int]]) -> bool:
        """Add the *picked* runs of *flow* that may start to *starting*; False when the
        flow's runs left queued wait for a run slot."""
        runner = self.ctx.runner
        for run_id in picked:
            if run_id in self.runs:
                continue
            if not runner.try_admit(flow):
                break
            starting.append((flow, run_id))
        if flow.max_active_runs is None:
            return True
        if runner.try_admit(flow):  # a run slot is still free
            runner.release_admission(flow)
            return True
        return False

    async def _start_claimed(self, starting: list[tuple[Flow, int]]) -> None:
        """Claim the admitted runs in one statement and start those claimed."""
        runner = self.ctx.runner
        try:
            # shielded: a stop arriving now must not leave claimed runs unstarted (they
            # would stay "running" until the next start resumes them)
            with anyio.CancelScope(shield=True):
                claimed = await self.ctx.store.claim_runs(
                    [run_id for _, run_id in starting], self.ctx.epoch, self.ctx.clock.now()
                )
        except BaseException:
            for flow, _ in starting:
                runner.release_admission(flow)
            raise
        for flow, run_id in starting:
            if run_id in claimed:
                self.runs.start(flow, run_id, claimed[run_id])
            else:  # claimed by another process meanwhile, or cancelled
                runner.release_admission(flow)

    def _say_waiting(self, reasons: dict[str, str]) -> None:
        """Store the flows' wait reasons that changed since the last pass."""
        changed: dict[str, str | None] = {
            name: reason
            for name, reason in reasons.items()
            if self.waiting_said.get(name) != reason
        }
        changed.update((name, None) for name in self.waiting_said.keys() - reasons.keys())
        self.waiting_said = reasons
        queue.set_wait_reasons(self.ctx.store, changed)


def _free_run_slots(runner: Runner, flow: Flow) -> int:
    """How many more runs of *flow* may start now under its ``max_active_runs`` (at most
    :data:`QUEUE_BATCH`); nothing is taken."""
    free = 0
    while free < QUEUE_BATCH and runner.try_admit(flow):
        free += 1
    for _ in range(free):
        runner.release_admission(flow)
    return free


def _queue_pass(
    conn: sqlite3.Connection, flows: Mapping[str, Flow], free: Mapping[str, int], epoch: int
) -> tuple[list[str], set[str], dict[str, list[int]]]:
    """One read for a pass of the queue: the flows with queued runs, the paused flows, and
    the oldest claimable runs of each flow that can start some (loaded, not paused, with
    ``free`` run slots, or :data:`QUEUE_BATCH` without a limit)."""
    names = queue.queued_flows(conn)
    if not names:
        return names, set(), {}
    paused = paused_flows(conn)
    wanted = {
        name: free.get(name, QUEUE_BATCH)
        for name in names
        if name in flows and name not in paused and free.get(name, QUEUE_BATCH) > 0
    }
    return names, paused, queue.oldest_claimable(conn, wanted, epoch) if wanted else {}
