"""Creates runs and hands them to the engine: new runs, retries of failed runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from runtime import codec
from runtime.clock import Clock, SystemClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.result import RunResult, TaskResult
from runtime.engine.events import EventBus, RunEnded
from runtime.engine.execution import Engine
from runtime.engine.executors import Executors
from runtime.engine.handle import Carry, RunHandle
from runtime.engine.limits import Limits
from runtime.engine.loopwatch import LoopWatch
from runtime.errors import SluicewayError
from runtime.states import RunState, TaskState
from runtime.store import Store, open_store, queries
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.runner")
INTERRUPTED = "InterruptedRunError: interrupted by service restart"


class Runner:
    """Runs flows in this process against one store, one set of limits and one event bus."""

    def __init__(self, config: Config, store: Store, engine: Engine, epoch: int) -> None:
        self.config = config
        self.epoch = epoch  # this process: the runs it executes carry it
        self.store = store
        self.engine = engine
        self.bus = engine.bus
        self.clock = engine.clock
        self.limits = engine.limits
        self._recorded: dict[str, str] = {}  # flows table rows written, by name: source hash

    async def run(
        self,
        flow: Flow,
        params: Mapping[str, Any] | None = None,
        *,
        trigger: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
        key: str | None = None,
        handle: RunHandle | None = None,
    ) -> RunResult:
        """Queue a run of *flow* and execute it to the end.

        With an idempotency *key* that already made a run, nothing new runs: the existing run
        is returned as stored.

        :raises FlowValidationError: when the flow cannot run
        :raises ParamError: for a param the flow does not declare
        """
        flow.validate(self.limits.pools, self.engine.executors.names)
        resolved = flow.resolve_params(params or {})
        now = self.clock.now()
        trigger = dict(trigger or {"kind": "manual"})
        logical = logical_date or now
        run_id, created = await self.store.create_run(
            flow=flow.name,
            params=resolved,
            trigger=trigger,
            logical_date=logical,
            created_at=now,
            key=key,
            source_hash=flow.source_hash(),
            epoch=self.epoch,
        )
        if not created:
            return await self.load(run_id)
        return await self._execute(flow, run_id, resolved, logical, trigger, handle=handle)

    async def retry(self, flow: Flow, run_id: int, *, handle: RunHandle | None = None) -> RunResult:
        """Run again the failed, upstream_failed, cancelled and skipped-by-failure tasks of
        ended run *run_id*, as a new run that reuses the stored results of the others."""
        old = await self.store.read(queries.get_run, run_id)
        if old["flow"] != flow.name:
            raise SluicewayError(f"run {run_id} is a run of {old['flow']!r}, not {flow.name!r}")
        if not RunState(old["state"]).terminal:
            raise SluicewayError(f"run {run_id} is still {old['state']}; retry it once it ended")
        if old["state"] == RunState.SUCCEEDED:
            raise SluicewayError(f"run {run_id} succeeded; there is nothing to retry")
        flow.validate(self.limits.pools, self.engine.executors.names)
        reuse = await self.store.read(queries.stored_results, run_id)
        reuse = {k: v for k, v in reuse.items() if k[0] in flow.tasks}
        params = {k: v for k, v in _params(old).items() if k in flow.params}
        resolved = flow.resolve_params(params)
        logical = codec.parse_iso(old["logical_date"])
        assert logical is not None
        trigger = {"kind": "retry", "run_id": run_id}
        new_id, _ = await self.store.create_run(
            flow=flow.name,
            params=resolved,
            trigger=trigger,
            logical_date=logical,
            created_at=self.clock.now(),
            retry_of=run_id,
            source_hash=flow.source_hash(),
            epoch=self.epoch,
        )
        carry = Carry(results=reuse)
        return await self._execute(flow, new_id, resolved, logical, trigger, carry, handle=handle)

    async def _execute(
        self,
        flow: Flow,
        run_id: int,
        params: Mapping[str, Any],
        logical: datetime,
        trigger: Mapping[str, Any],
        carry: Carry | None = None,
        *,
        handle: RunHandle | None,
        admitted: bool = False,
    ) -> RunResult:
        if self._recorded.get(flow.name) != flow.source_hash():
            self._recorded[flow.name] = flow.source_hash()
            path = str(flow.path) if flow.path else None
            self.store.record_flow(flow.name, path, flow.source_hash(), self.clock.now())
        limit = flow.max_active_runs
        if not admitted and not self.limits.try_admit_run(flow.name, limit):
            reason = f"waiting: max_active_runs={limit} of flow {flow.name!r} reached"
            self.store.put_run(RunRow(run_id, RunState.QUEUED, wait_reason=reason))
            try:
                await self.limits.admit_run(flow.name, limit)
            except BaseException:
                # cancelled while queued (Ctrl-C, service stop): it never started, but it ended
                now = self.clock.now()
                self.store.put_run(RunRow(run_id, RunState.CANCELLED, ended_at=codec.iso(now)))
                self.bus.publish(RunEnded(now, run_id, flow.name, RunState.CANCELLED))
                raise
        try:
            result = await self.engine.execute(
                flow,
                run_id,
                params=params,
                logical_date=logical,
                trigger=trigger,
                carry=carry,
                handle=handle,
            )
        finally:
            self.limits.release_run(flow.name, limit)
        # no flush here: the end of the run is committed with the next batch, within
        # flush_interval, and closing the store commits everything left
        return result

    # --- queued runs and recovery (the service) ---

    def try_admit(self, flow: Flow) -> bool:
        """Take a run slot of *flow* now (``max_active_runs``); see :meth:`run_queued`."""
        return self.limits.try_admit_run(flow.name, flow.max_active_runs)

    def release_admission(self, flow: Flow) -> None:
        self.limits.release_run(flow.name, flow.max_active_runs)

    async def run_queued(
        self, flow: Flow, run_id: int, *, handle: RunHandle | None = None
    ) -> RunResult | None:
        """Claim queued run *run_id* and execute it; ``None`` when another process claimed it
        first or it was cancelled meanwhile. The caller already holds its admission
        (:meth:`try_admit`); it is released here."""
        try:
            claimed = await self.store.claim_runs([run_id], self.epoch, self.clock.now())
        except BaseException:
            self.release_admission(flow)
            raise
        if run_id not in claimed:
            self.release_admission(flow)
            return None
        return await self.run_claimed(flow, run_id, claimed[run_id], handle=handle)

    async def run_claimed(
        self,
        flow: Flow,
        run_id: int,
        claimed: Mapping[str, Any],
        *,
        handle: RunHandle | None = None,
    ) -> RunResult:
        """Execute a run this process claimed (:meth:`Store.claim_runs`); the caller holds
        its admission, released here."""
        try:
            params, logical = _stored_inputs(flow, claimed, handle)
            carry = None
            if claimed["retry_of"] is not None:  # queued by `retry` or `backfill --rerun`
                results = await self.store.read(queries.stored_results, claimed["retry_of"])
                carry = Carry(results={k: v for k, v in results.items() if k[0] in flow.tasks})
        except BaseException:
            self.release_admission(flow)
            raise
        return await self._execute(
            flow,
            run_id,
            params,
            logical,
            claimed["trigger"],
            carry,
            handle=handle,
            admitted=True,
        )

    async def resume(
        self, flow: Flow, run_id: int, *, handle: RunHandle | None = None
    ) -> RunResult:
        """Resume a run a stopped process left running: succeeded tasks are not run again,
        an attempt that was running counts as interrupted and is retried per the task's
        policy (or fails when no tries are left, or ``on_crash="fail"``), retrying tasks keep
        their next-attempt time. The caller holds the admission; it is released here."""
        try:
            data = await self.store.read(queries.get_run, run_id)
            results = await self.store.read(queries.stored_results, run_id)
            await self.store.mark_interrupted(run_id, self.epoch, self.clock.now())
            interrupted = await self.store.read(queries.interrupted_tasks, run_id)
            carry = _carry_for_resume(flow, data, results, interrupted)
            params, logical = _stored_inputs(flow, data, handle)
        except BaseException:
            self.release_admission(flow)
            raise
        log.info("run=%s flow=%s resuming after a restart", run_id, flow.name)
        return await self._execute(
            flow,
            run_id,
            params,
            logical,
            data["trigger"],
            carry,
            handle=handle,
            admitted=True,
        )

    async def load(self, run_id: int) -> RunResult:
        """A stored run as a RunResult (results are those that could be stored)."""
        data = await self.store.read(queries.get_run, run_id)
        stored = await self.store.read(queries.stored_results, run_id)
        result = RunResult(run_id, data["flow"], RunState(data["state"]), error=data["error"])
        for t in data["tasks"]:
            idx = t.get("index")
            tr = TaskResult(
                t["name"],
                TaskState(t["state"]),
                t["attempts"],
                stored.get((t["name"], -1 if idx is None else idx)),
                t["error"],
                t["reason"],
                idx,
            )
            if idx is None:
                result.tasks[t["name"]] = tr
            else:
                parent = result.tasks[t["name"]]
                parent.instances = [*(parent.instances or []), tr]
        return result


@asynccontextmanager
async def open_runner(
    config: Config, *, clock: Clock | None = None, bus: EventBus | None = None
) -> AsyncIterator[Runner]:
    """Open the store and limits described by *config* and yield a :class:`Runner`."""
    # the watch warns of a task that blocks the loop (it names the task)
    with LoopWatch(config.loop_block_threshold):
        async with open_store(
            config.db,
            interval=config.flush_interval,
            busy_timeout=config.busy_timeout,
            commit_timeout=config.commit_timeout,
        ) as store:
            limits = Limits(config.max_concurrency, config.pools)
            engine = Engine(
                store,
                limits,
                clock or SystemClock(),
                # not `bus or ...`: a bus with no subscriber yet is falsy, and its subscribers
                # (the SLA monitor of `backfill`) would never hear of the runs
                bus if bus is not None else EventBus(),
                result_max_bytes=config.result_max_bytes,
                threads=config.max_concurrency,
                executors=Executors(config.executors),
            )
            epoch = await store.start_epoch(engine.clock.now())
            try:
                yield Runner(config, store, engine, epoch)
            finally:
                await engine.executors.aclose()  # shielded: runs even mid-cancel
                store.end_epoch(epoch, engine.clock.now())


def _stored_inputs(
    flow: Flow, row: Mapping[str, Any], handle: RunHandle | None
) -> tuple[dict[str, Any], datetime]:
    """A stored run's params (those the flow still declares) and logical date; a cancel
    requested while it waited reaches its handle."""
    if row.get("cancel_requested") and handle is not None:
        handle.cancel()
    params = {k: v for k, v in _params(row).items() if k in flow.params}
    logical = codec.parse_iso(row["logical_date"])
    assert logical is not None
    return flow.resolve_params(params), logical


def _params(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run's params as the run had them: rows give them as parsed JSON, where a
    NaN, a datetime or a tuple is a tagged object (codec.encode)."""
    try:
        params: dict[str, Any] = codec.from_json(row["params"])
    except codec.Undecodable as exc:
        raise SluicewayError(f"the run's stored params cannot be read back: {exc}") from None
    return params


def _carry_for_resume(
    flow: Flow,
    data: Mapping[str, Any],
    results: Mapping[tuple[str, int], Any],
    interrupted: Collection[tuple[str, int]],
) -> Carry:
    """Decide, per stored task row of an interrupted run, what its resumption carries.

    :param interrupted: the (name, idx) of tasks whose newest attempt is flagged interrupted
    """
    attempts: dict[tuple[str, int], int] = {}
    failed: dict[tuple[str, int], str] = {}
    not_before: dict[tuple[str, int], Any] = {}
    for row in data["tasks"]:
        task = flow.tasks.get(row["name"])
        if task is None:
            continue
        key = (row["name"], row.get("index", -1))
        attempts[key] = row["attempts"]
        state = row["state"]
        if key[1] < 0 and task.map is not None:
            continue  # a mapped task's own row follows its instances
        crashed = state == TaskState.RUNNING  # the process died mid-attempt
        # a shutdown interrupted it on purpose: the attempt is recorded, but it is not the
        # task's failure, so a deploy restart never uses up a task's last try
        stopped = state == TaskState.PENDING and key in interrupted
        if (crashed or stopped) and row["attempts"] > 0:
            if task.on_crash == "fail":
                failed[key] = f"{INTERRUPTED} (on_crash='fail')"
            elif crashed and row["attempts"] > task.retry.retries:
                failed[key] = f"{INTERRUPTED}; no retries left"
        elif state == TaskState.RETRYING and row["next_attempt_at"]:
            not_before[key] = codec.parse_iso(row["next_attempt_at"])
    return Carry(results=results, attempts=attempts, failed=failed, not_before=not_before)
