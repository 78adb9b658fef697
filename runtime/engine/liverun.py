"""One run in progress: its state, and how a unit's end moves it on, up to the run's result.

:class:`~runtime.engine.execution.Execution` builds on :class:`LiveRun`: it decides what runs
and dispatches the attempts (``runtime.engine.attempts``); both end units only through
:meth:`LiveRun.settle`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import anyio

from runtime import codec
from runtime.clock import Clock
from runtime.define.context import TriggerInfo
from runtime.define.flow import Branch, Flow
from runtime.define.result import RunResult, TaskResult
from runtime.engine.events import EventBus, RunEnded, TaskEnded
from runtime.engine.executors import Executors
from runtime.engine.handle import Carry
from runtime.engine.limits import Limits
from runtime.engine.recording import Recorder
from runtime.engine.rules import S, mapped_outcome, run_outcome
from runtime.engine.threads import ThreadCall
from runtime.engine.units import Node, Unit
from runtime.states import RunState, TaskState
from runtime.store import Store
from runtime.store.rows import RunRow

log = logging.getLogger("sluiceway.runtime.engine")


class EngineParts(Protocol):
    """What a run uses of the engine that executes it (:class:`runtime.engine.execution.Engine`)."""

    store: Store
    limits: Limits
    clock: Clock
    bus: EventBus
    thread_limiter: anyio.CapacityLimiter
    executors: Executors
    rng: random.Random
    result_max_bytes: int


class LiveRun:
    """A run being executed: its nodes, its flags and its recorder, and how its units end.

    A unit reaches a terminal state through :meth:`settle` and nothing else: the state is
    recorded and published, and the graph moves on (a mapped task ends with its last
    instance, a task's end releases its downstream tasks, the last task's end sets
    :attr:`done`). :meth:`end_run` then gives the run's state and result.
    """

    def __init__(
        self,
        engine: EngineParts,
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
        self.carry = carry
        self.rec = Recorder(engine.store, run_id, engine.result_max_bytes)
        self.cancelling = False  # soft cancel: what runs stops, all_done tasks still run
        self.interrupting = False  # service shutdown: stop now, resume at the next start
        self.started_at: datetime | None = None
        self.nodes: dict[str, Node] = {}  # in topological order
        self.open_nodes = 0  # tasks not ended yet; the run ends at 0
        self.done = anyio.Event()
        self.tg: asyncio.TaskGroup | None = None  # the run's attempts (and retry waits)
        # threads of `def` attempts that were abandoned (timed out, cancelled) but still run:
        # each keeps its unit's slots, and the unit's next attempt waits, until it really ends
        self.lingering: dict[Unit, ThreadCall] = {}

    def _evaluate(self, node: Node) -> None:
        """Every upstream of *node* ended: run it, or end it per its rule (Execution)."""
        raise NotImplementedError

    # --- a unit ends ---

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
        """Record a terminal state of *unit* and move the run on (unless not *propagate*: the
        run is being torn down)."""
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
            self._publish_end(unit, now)
        if not propagate:
            return
        node = unit.node
        if unit.index is not None:
            node.open -= 1
            if node.open == 0:
                self._instances_ended(node, now)
            return
        self._node_ended(node)

    def _publish_end(self, unit: Unit, now: datetime) -> None:
        took = (now - unit.started_at).total_seconds() if unit.started_at else None
        self.bus.publish(
            TaskEnded(
                now,
                self.run_id,
                self.flow.name,
                unit.label,
                unit.node.name,
                unit.index,
                unit.state,
                unit.attempts,
                took,
                unit.error,
                unit.reason,
            )
        )

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

    def apply_branch(self, node: Node, branch: Branch) -> Exception | None:
        """Mark the downstream tasks *branch* did not choose; the error when it names a task
        that is not a direct downstream task of *node*."""
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

    # --- the run ends ---

    def end_run(self, now: datetime) -> RunResult:
        """Record and publish the run's terminal state; its result."""
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

    def interrupted(self) -> RunResult:
        """Leave the run resumable: it stays running; what ran was recorded interrupted."""
        log.warning(
            "run=%s flow=%s interrupted; it resumes at the next start", self.run_id, self.flow.name
        )
        result = RunResult(self.run_id, self.flow.name, RunState.RUNNING)
        for node in self.nodes.values():
            u = node.unit
            result.tasks[node.name] = TaskResult(node.name, u.state, u.attempts, u.result)
        return result
