"""Runs one flow run: a ready set by in-degree, slot chains, retries, timeouts, rules, mapping."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio

from runtime import codec
from runtime.clock import Clock
from runtime.define.flow import Branch, Flow
from runtime.define.result import RunResult
from runtime.engine.attempts import run_attempt
from runtime.engine.events import EventBus, RunStarted
from runtime.engine.executors import Executors
from runtime.engine.handle import Carry, RunHandle
from runtime.engine.limits import Chain, Lane, Limits, Slots
from runtime.engine.liverun import LiveRun
from runtime.engine.rules import RUN, S, decide, map_items
from runtime.engine.threads import ThreadCall
from runtime.engine.units import Node, Unit
from runtime.states import RunState
from runtime.store import Store
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.engine")


class Engine:
    """Executes runs against one store under the process's shared limits.

    The engine knows no HTTP, cron or files: it gets a run and emits events. Every state
    change is queued to the store without awaiting it; the store's writer commits in batches.
    """

    def __init__(
        self,
        store: Store,
        limits: Limits,
        clock: Clock,
        bus: EventBus,
        *,
        result_max_bytes: int = 8 * 1024 * 1024,
        threads: int = 40,
        executors: Executors | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.bus = bus
        self.result_max_bytes = result_max_bytes
        self.thread_limiter = anyio.CapacityLimiter(threads)
        # executor plugins (executor="dask"); the owner of the engine closes them
        self.executors = executors if executors is not None else Executors({})
        self.rng = random.Random()

    async def execute(
        self,
        flow: Flow,
        run_id: int,
        *,
        params: Mapping[str, Any],
        logical_date: datetime,
        trigger: Mapping[str, Any],
        carry: Carry | None = None,
        handle: RunHandle | None = None,
    ) -> RunResult:
        """Run every task of *flow* for run *run_id* and return the outcome.

        :param carry: what earlier executions of the run (or of the run it retries) left:
            results to reuse, attempts spent, tasks to fail, retry times to keep
        :param handle: lets the caller cancel the run softly (``all_done`` tasks still run),
            or interrupt it for a service restart
        """
        execution = Execution(self, flow, run_id, params, logical_date, trigger, carry or Carry())
        if handle is not None:
            handle.attach(execution)
            if handle.cancel_requested:
                execution.cancelling = True
            if handle.interrupt_requested:
                execution.interrupting = True
                return execution.interrupted()
        return await execution.execute()


class Execution(LiveRun):
    """Executes one run of a flow, from its first ready task to its result.

    Tasks become *nodes*; what runs is a *unit* (a task, or one instance of a mapped task).
    A node whose upstream all ended is evaluated once (:meth:`_evaluate`): it runs, or ends
    by its trigger rule. A unit that runs waits in its slot chain's lane until the limits
    start it (:meth:`_start`); its attempts are tasks of the run's ``asyncio.TaskGroup``
    (``runtime.engine.attempts``); every end goes through :meth:`LiveRun.settle`, which
    releases the downstream nodes. Nothing here awaits the store.
    """

    def __init__(
        self,
        engine: Engine,
        flow: Flow,
        run_id: int,
        params: Mapping[str, Any],
        logical_date: datetime,
        trigger: Mapping[str, Any],
        carry: Carry,
    ) -> None:
        super().__init__(engine, flow, run_id, params, logical_date, trigger, carry)
        self.scope: anyio.CancelScope | None = None
        graph = flow.validate(engine.limits.pools, engine.executors.names)
        limits = engine.limits
        flow_slots = limits.flow_slots(flow.name, flow.max_concurrency)
        # ready units wait in one lane per distinct slot chain (see runtime/limits.py)
        self.lanes: dict[Chain, Lane[Unit]] = {}
        for name in graph.order:
            task = flow.tasks[name]
            slots: list[Slots | None] = [limits.global_slots, flow_slots]
            slots.append(limits.pools[task.pool] if task.pool else None)
            if task.max_concurrency is not None:
                slots.append(limits.task_slots(flow.name, task.name, task.max_concurrency))
            chain = tuple(s for s in slots if s is not None)
            lane = self.lanes.get(chain)
            if lane is None:
                lane = self.lanes[chain] = Lane(chain, self._start, self._blocked)
            self.nodes[name] = Node(task, lane)
        for name, node in self.nodes.items():
            node.upstream = tuple(self.nodes[u] for u in graph.upstream[name])
            node.downstream = tuple(self.nodes[d] for d in graph.downstream[name])
            node.waiting = len(node.upstream)

    # --- the run ---

    async def execute(self) -> RunResult:
        now = self.started_at = self.clock.now()
        self.store.put_run(RunRow(self.run_id, RunState.RUNNING, codec.iso(now)))
        first = self.trigger.get("kind") == "schedule" and not self.carry.attempts
        scheduled = self.logical_date if first else None  # a resumed run is not late again
        self.bus.publish(RunStarted(now, self.run_id, self.flow.name, scheduled))
        log.info("run=%s flow=%s started", self.run_id, self.flow.name)
        self.open_nodes = len(self.nodes)
        for node in self.nodes.values():
            self._restore(node)
        try:
            # asyncio's own task group: spawning costs ~4 us a task against ~25 us through
            # anyio's, and a run spawns one task per attempt (anyio scopes work inside them)
            with anyio.CancelScope() as self.scope:
                await self._run_graph()
            if self.interrupting:
                return self.interrupted()
        except BaseException:
            if self.interrupting:
                self.interrupted()
                raise
            # cancelled from outside (second Ctrl-C): record what was left as cancelled
            self.cancelling = True
            now = self.clock.now()
            for node in self.nodes.values():
                for unit in (*(node.instances or ()), node.unit):
                    if not unit.state.terminal:
                        self.settle(unit, S.CANCELLED, now, reason="run cancelled", propagate=False)
            self.end_run(self.clock.now())
            raise
        finally:
            for lane in self.lanes.values():
                self.limits.close(lane)
        return self.end_run(self.clock.now())

    async def _run_graph(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self.tg = tg
            nodes = list(self.nodes.values())
            for node in nodes:
                if node.unit.state.terminal:  # carried over: release its downstream
                    self._node_ended(node)
            for node in nodes:
                if not node.upstream and not node.unit.state.terminal:
                    self._evaluate(node)
            await self.done.wait()

    def interrupt(self) -> None:
        self.interrupting = True
        if self.scope is not None:
            self.scope.cancel()

    def cancel(self) -> None:
        """Soft cancel: stop what runs, cancel what waits, let ``all_done`` tasks run."""
        if self.cancelling:
            return
        self.cancelling = True
        log.warning("run=%s flow=%s cancelling", self.run_id, self.flow.name)
        now = self.clock.now()
        for node in self.nodes.values():
            for unit in (*(node.instances or ()), node.unit):
                if unit.scope is not None:
                    unit.scope.cancel()
        for lane in self.lanes.values():
            # ready units never start, but all_done tasks still run (they keep their place)
            cancelled = [u for u in lane.units if u.node.task.run_if != "all_done"]
            if cancelled:
                kept = [u for u in lane.units if u.node.task.run_if == "all_done"]
                lane.units.clear()
                lane.units.extend(kept)
                for unit in cancelled:
                    self.settle(unit, S.CANCELLED, now, reason="run cancelled")

    # --- deciding ---

    def _restore(self, node: Node) -> None:
        """Take a stored result instead of running again (retry of a run, resumed run)."""
        key = (node.name, -1)
        node.unit.attempts = self.carry.attempts.get(key, 0)
        # nodes come in topological order; a task downstream of one that runs again (an
        # all_done report after a failure) must run again too, or it keeps a stale result
        if key in self.carry.failed:
            node.unit.state = S.FAILED
            node.unit.error = self.carry.failed[key]
            node.unit.ended_at = self.clock.now()
        elif key in self.carry.results and all(up.reused for up in node.upstream):
            node.reused = True
            node.unit.result = self.carry.results[key]
            node.unit.state = S.SUCCEEDED
            node.unit.reason = "result reused from an earlier attempt"
            if isinstance(node.unit.result, Branch):  # the same tasks stay not chosen
                self.apply_branch(node, node.unit.result)
        self.rec.task(node.unit, None)

    def _evaluate(self, node: Node) -> None:
        """Every upstream of *node* ended: run it, or end it per its rule."""
        now = self.clock.now()
        if node.not_chosen is not None:
            self.settle(node.unit, S.SKIPPED, now, reason=node.not_chosen)
            return
        if self.cancelling and node.task.run_if != "all_done":
            self.settle(node.unit, S.CANCELLED, now, reason="run cancelled")
            return
        verdict = decide(node.task.run_if, [u.unit.state for u in node.upstream])
        if verdict is not RUN:
            self.settle(node.unit, verdict.state, now, reason=verdict.reason)
            return
        if node.task.map is None:
            self._ready_or_wait(node.unit)
            return
        source = self.nodes[node.task.map]
        node.items, error = map_items(source.unit.result, node.task.map, source.name)
        if error is not None:
            self.settle(node.unit, S.FAILED, now, error=error)
            return
        node.instances = [Unit(node, i) for i in range(len(node.items))]
        if not node.instances:
            self.settle(node.unit, S.SUCCEEDED, now, result=[], reason="mapped over no items")
            return
        node.open = len(node.instances)
        node.unit.state = S.RUNNING
        node.unit.started_at = now
        self.rec.task(node.unit, None)
        self._start_instances(node, node.instances, now)

    def _start_instances(self, node: Node, instances: list[Unit], now: datetime) -> None:
        """Make a mapped task's instances ready, or take what the carry has for them."""
        carry = self.carry
        reusable = all(up.reused for up in node.upstream)  # same items, same other inputs
        for inst in instances:
            key = (node.name, inst.idx)
            inst.attempts = carry.attempts.get(key, 0)
            if reusable and key in carry.results:
                inst.result = carry.results[key]
                inst.state = S.SUCCEEDED
                inst.reason = "result reused from an earlier attempt"
                self.rec.task(inst, None)
                node.open -= 1
            elif reusable and key in carry.failed:
                inst.state = S.FAILED
                inst.error = carry.failed[key]
                inst.ended_at = now
                self.rec.task(inst, None)
                node.open -= 1
            else:
                self.rec.task(inst, None)
                self._ready_or_wait(inst)
        if node.open == 0:
            self._instances_ended(node, now)

    def _ready_or_wait(self, unit: Unit) -> None:
        """Make *unit* ready, or wait first for a next-attempt time carried over."""
        not_before = self.carry.not_before  # empty unless a resumed run had retries waiting
        due = not_before.get((unit.node.name, unit.idx)) if not_before else None
        if due is not None:
            delay = (due - self.clock.now()).total_seconds()
            if delay > 0:
                assert self.tg is not None
                unit.state = S.RETRYING
                self.tg.create_task(self._retry_later(unit, delay))
                return
        self._make_ready(unit.node, unit)

    def _make_ready(self, node: Node, unit: Unit) -> None:
        """Start *unit* as soon as its slot chain has room (at once, if it has)."""
        self.limits.offer(node.lane, unit)

    # --- dispatching: the limits call these when a unit's slots are taken, or are full ---

    def _start(self, unit: Unit) -> bool:
        assert self.tg is not None
        attempt = self._attempt(unit)
        try:
            self.tg.create_task(attempt)
        except RuntimeError:  # the task group is shutting down: a hard cancel
            attempt.close()
            return False
        return True

    def _blocked(self, unit: Unit, full: Slots) -> None:
        if unit.reason is None and unit.state is S.PENDING:
            # `show` says why a ready task has not started
            unit.reason = f"waiting for a slot: {full.name} is full"
            self.rec.task(unit, None)

    async def _attempt(self, unit: Unit) -> None:
        node = unit.node
        retry_in: float | None = None
        try:
            # a slot given back during a hard cancel dispatches into the cancelled task group:
            # stop before the attempt counts or runs (the run's cancel path records the unit)
            await anyio.lowlevel.checkpoint_if_cancelled()
            if self.cancelling and node.task.run_if != "all_done":
                # dispatched just before a soft cancel: still pending, so it never starts
                self.settle(unit, S.CANCELLED, self.clock.now(), reason="run cancelled")
            else:
                retry_in = await run_attempt(self, unit)
        finally:
            # a slot is given back on every path (by an abandoned thread, once it ends); it
            # starts what waited for it at once
            thread = self.lingering.get(unit)
            if thread is None:
                self.limits.give(node.chain)
            else:
                thread.when_ended(functools.partial(self._thread_ended, unit, thread))
        if retry_in is not None:
            assert self.tg is not None
            self.tg.create_task(self._retry_later(unit, retry_in))

    async def _retry_later(self, unit: Unit, delay: float) -> None:
        # a soft cancel between the failed attempt and this task's start found no scope
        if not self.cancelling:
            with anyio.CancelScope() as scope:
                unit.scope = scope
                await self.clock.sleep(delay)
                thread = self.lingering.get(unit)
                if thread is not None:  # never two attempts of a task at once
                    unit.reason = (
                        f"waiting for the timed-out attempt {unit.attempts}'s thread to end"
                    )
                    self.rec.task(unit, unit.next_at)
                    await thread.ended.wait()
            unit.scope = None
        if self.cancelling:
            self.settle(unit, S.CANCELLED, self.clock.now(), reason="run cancelled")
        else:
            self._make_ready(unit.node, unit)

    def _thread_ended(self, unit: Unit, thread: ThreadCall) -> None:
        """An abandoned attempt's thread returned: its slots are free at last."""
        if self.lingering.get(unit) is thread:
            del self.lingering[unit]
        self.limits.give(unit.node.chain)  # starts what waited for them, in any run
