"""Runs one flow run: a ready set by in-degree, slot chains, retries, timeouts, rules, mapping."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from runtime import codec
from runtime.clock import Clock
from runtime.define.context import TriggerInfo
from runtime.define.flow import Branch, Flow
from runtime.define.result import RunResult, TaskResult
from runtime.engine.attempts import run_attempt
from runtime.engine.events import EventBus, RunEnded, RunStarted, TaskEnded
from runtime.engine.limits import Chain, Lane, Limits, Slots
from runtime.engine.recording import Recorder
from runtime.engine.rules import RUN, decide, map_items, mapped_outcome, run_outcome
from runtime.engine.threads import ThreadCall
from runtime.engine.units import Node, Unit
from runtime.states import RunState, TaskState
from runtime.store import Store
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.engine")

S = TaskState


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
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.bus = bus
        self.result_max_bytes = result_max_bytes
        self.thread_limiter = anyio.CapacityLimiter(threads)
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
            handle._execution = execution
            if handle._cancel_requested:
                execution.cancelling = True
            if handle._interrupt_requested:
                execution.interrupting = True
                return execution._interrupted()
        return await execution.execute()


@dataclass(frozen=True, slots=True)
class Carry:
    """What a run carries over, by (task, index; -1 for the task itself).

    :ivar results: stored results of succeeded tasks; reused when every upstream is reused too
    :ivar attempts: attempts already spent (a resumed run keeps counting)
    :ivar failed: tasks to end failed at once, with the error (interrupted, no tries left)
    :ivar not_before: retrying tasks keep their stored next-attempt time
    """

    results: Mapping[tuple[str, int], Any] = field(default_factory=dict)
    attempts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    failed: Mapping[tuple[str, int], str] = field(default_factory=dict)
    not_before: Mapping[tuple[str, int], datetime] = field(default_factory=dict)


class RunHandle:
    """Lets the caller of :meth:`Engine.execute` cancel the run from outside."""

    def __init__(self) -> None:
        self._execution: Execution | None = None
        self._cancel_requested = False
        self._interrupt_requested = False

    def cancel(self) -> None:
        """Cancel running tasks; tasks with ``run_if="all_done"`` still run afterwards."""
        self._cancel_requested = True
        if self._execution is not None:
            self._execution.cancel()

    def interrupt(self) -> None:
        """Stop at once for a service shutdown: running attempts are recorded as interrupted,
        and the run stays ``running`` so the next start resumes it."""
        self._interrupt_requested = True
        if self._execution is not None:
            self._execution.interrupt()


class Execution:
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
        self.engine = engine
        self.store = engine.store
        self.limits = engine.limits
        self.clock = engine.clock
        self.bus = engine.bus
        self.flow = flow
        self.run_id = run_id
        self.params = params
        self.logical_date = logical_date
        self.trigger = TriggerInfo(trigger)  # one per run: every attempt's run.trigger
        self.reuse = carry.results
        self.prior = carry.attempts
        self.carry = carry
        self.rec = Recorder(engine.store, run_id, engine.result_max_bytes)
        self.cancelling = False
        self.interrupting = False
        self.scope: anyio.CancelScope | None = None
        self.started_at: datetime | None = None
        self.done = anyio.Event()
        self.open_nodes = 0
        self.tg: asyncio.TaskGroup | None = None
        # threads of `def` attempts that were abandoned (timed out, cancelled) but still run:
        # each keeps its unit's slots, and the unit's next attempt waits, until it really ends
        self.lingering: dict[Unit, ThreadCall] = {}
        graph = flow.validate(engine.limits.pools)
        limits = engine.limits
        flow_slots = limits.flow_slots(flow.name, flow.max_concurrency)
        self.nodes: dict[str, Node] = {}
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
        self.bus.publish(RunStarted(now, self.run_id, self.flow.name))
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
                return self._interrupted()
        except BaseException:
            if self.interrupting:
                self._interrupted()
                raise
            # cancelled from outside (second Ctrl-C): record what was left as cancelled
            self.cancelling = True
            now = self.clock.now()
            for node in self.nodes.values():
                for unit in (*(node.instances or ()), node.unit):
                    if not unit.state.terminal:
                        self.settle(unit, S.CANCELLED, now, reason="run cancelled", propagate=False)
            self._end_run(self.clock.now())
            raise
        finally:
            for lane in self.lanes.values():
                self.limits.close(lane)
        return self._end_run(self.clock.now())

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

    def _interrupted(self) -> RunResult:
        """Leave the run resumable: it stays running; what ran was recorded interrupted."""
        log.warning(
            "run=%s flow=%s interrupted; it resumes at the next start", self.run_id, self.flow.name
        )
        result = RunResult(self.run_id, self.flow.name, RunState.RUNNING)
        for node in self.nodes.values():
            u = node.unit
            result.tasks[node.name] = TaskResult(node.name, u.state, u.attempts, u.result)
        return result

    def _end_run(self, now: datetime) -> RunResult:
        state = run_outcome(self.cancelling, [node.unit.state for node in self.nodes.values()])
        failed = [n.name for n in self.nodes.values() if n.unit.state is S.FAILED]
        error = f"failed tasks: {', '.join(failed)}" if failed else None
        self.store.put_run(
            RunRow(self.run_id, state, codec.iso(self.started_at), codec.iso(now), error)
        )
        self.bus.publish(RunEnded(now, self.run_id, self.flow.name, state, error))
        log.info("run=%s flow=%s %s", self.run_id, self.flow.name, state)
        result = RunResult(self.run_id, self.flow.name, state, error=error)
        for node in self.nodes.values():
            u = node.unit
            tr = TaskResult(node.name, u.state, u.attempts, u.result, u.error, u.reason)
            if node.instances is not None:
                tr.instances = [
                    TaskResult(node.name, i.state, i.attempts, i.result, i.error, i.reason, i.idx)
                    for i in node.instances
                ]
            result.tasks[node.name] = tr
        return result

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
        node.unit.attempts = self.prior.get(key, 0)
        # nodes come in topological order; a task downstream of one that runs again (an
        # all_done report after a failure) must run again too, or it keeps a stale result
        if key in self.carry.failed:
            node.unit.state = S.FAILED
            node.unit.error = self.carry.failed[key]
            node.unit.ended_at = self.clock.now()
        elif key in self.reuse and all(up.reused for up in node.upstream):
            node.reused = True
            node.unit.result = self.reuse[key]
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
        reusable = all(up.reused for up in node.upstream)  # same items, same other inputs
        for inst in node.instances:
            key = (node.name, inst.idx)
            inst.attempts = self.prior.get(key, 0)
            if reusable and key in self.reuse:
                inst.result = self.reuse[key]
                inst.state = S.SUCCEEDED
                inst.reason = "result reused from an earlier attempt"
                self.rec.task(inst, None)
                node.open -= 1
            elif reusable and key in self.carry.failed:
                inst.state = S.FAILED
                inst.error = self.carry.failed[key]
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
        due = self.carry.not_before.get((unit.node.name, unit.idx))
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

    def apply_branch(self, node: Node, branch: Branch) -> Exception | None:
        names = {d.name for d in node.downstream}
        unknown = [n for n in branch.names if n not in names]
        if unknown:
            return ValueError(
                f"task {node.name!r} returned Branch({', '.join(map(repr, branch.names))}) but "
                f"{', '.join(map(repr, unknown))} is not a direct downstream task of "
                f"{node.name!r} (downstream: {', '.join(sorted(names)) or 'none'})"
            )
        for down in node.downstream:
            if down.name not in branch.names:
                down.not_chosen = f"not chosen by {node.name}"
        return None

    # --- ending ---

    def settle(
        self,
        unit: Unit,
        state: TaskState,
        now: datetime,
        *,
        result: Any = None,
        error: str | None = None,
        reason: str | None = None,
        propagate: bool = True,
    ) -> None:
        """Record a terminal state of *unit* and move the run on."""
        if unit.state.terminal:
            return
        unit.state = state
        unit.ended_at = now
        if state is S.SUCCEEDED:
            unit.result = result
        if error is not None or state in (S.SUCCEEDED, S.SKIPPED):
            unit.error = error  # a cancelled task keeps the error of its last failed attempt
        unit.reason = reason
        self.rec.task(unit, None)
        if state is S.SKIPPED:  # `sluiceway logs` tells why, beside show's reason column
            self.rec.log(unit, unit.attempts, now, "INFO", f"skipped: {reason}")
        if self.bus:
            took = (now - unit.started_at).total_seconds() if unit.started_at else None
            flow, node = self.flow.name, unit.node
            self.bus.publish(
                TaskEnded(
                    now,
                    self.run_id,
                    flow,
                    unit.label,
                    node.name,
                    unit.index,
                    state,
                    unit.attempts,
                    took,
                    unit.error,
                    reason,
                )
            )
        if not propagate:
            return
        node = unit.node
        if unit.idx >= 0:
            node.open -= 1
            if node.open == 0:
                self._instances_ended(node, now)
            return
        self._node_ended(node)

    def _instances_ended(self, node: Node, now: datetime) -> None:
        insts = node.instances or []
        state, error, reason = mapped_outcome([i.state for i in insts], [i.label for i in insts])
        result = None
        if state is S.SUCCEEDED:
            node.unit.attempts = max((i.attempts for i in insts), default=0)
            result = [i.result for i in insts]
        elif state is S.FAILED:
            # an all_done report downstream still sees what the other instances produced
            node.unit.result = [i.result if i.state is S.SUCCEEDED else None for i in insts]
        self.settle(node.unit, state, now, result=result, error=error, reason=reason)

    def _node_ended(self, node: Node) -> None:
        for down in node.downstream:
            down.waiting -= 1
            if down.waiting == 0 and not down.unit.state.terminal:
                self._evaluate(down)
        self.open_nodes -= 1
        if self.open_nodes == 0:
            self.done.set()
