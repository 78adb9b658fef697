"""The SLA monitor: misses found by its timer while runs still go, recorded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from runtime import Flow, codec
from runtime.define.result import RunResult
from runtime.engine.events import Event
from runtime.engine.runner import Runner
from runtime.scheduling.sla import SlaMissed, run_sla_monitor
from runtime.states import RunState
from runtime.store import queries
from runtime.testing import BlockingClock
from tests.conftest import MakeRunner
from tests.waiting import WAIT

T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


@dataclass
class Gate:
    """Holds a task until the test opens it."""

    started: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)


def held_flow(gate: Gate, *, sla: float | None = None, task_sla: float | None = None) -> Flow:
    flow = Flow("late", sla=sla)

    @flow.task(sla=task_sla)
    async def hold() -> str:
        gate.started.set()
        await gate.release.wait()
        return "done"

    return flow


@pytest.fixture
def clock() -> BlockingClock:
    return BlockingClock(T0)


class Misses:
    """Subscribes to a bus: the SlaMissed events published, and a way to wait for them."""

    def __init__(self) -> None:
        self.seen: list[SlaMissed] = []
        self._changed = anyio.Event()

    def __call__(self, event: Event) -> None:
        if isinstance(event, SlaMissed):
            self.seen.append(event)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait(self, count: int) -> None:
        while len(self.seen) < count:
            await self._changed.wait()


@dataclass
class Started:
    """A run going in the background; ``ended`` is set with its result."""

    ended: anyio.Event = field(default_factory=anyio.Event)
    result: RunResult | None = None

    async def wait(self) -> RunResult:
        with anyio.fail_after(WAIT):
            await self.ended.wait()
        assert self.result is not None
        return self.result


def start_run(tg: anyio.abc.TaskGroup, runner: Runner, flow: Flow) -> Started:
    started = Started()

    async def go() -> None:
        started.result = await runner.run(flow)
        started.ended.set()

    tg.start_soon(go)
    return started


async def start_monitor(tg: anyio.abc.TaskGroup, runner: Runner, flow: Flow) -> Misses:
    misses = Misses()
    runner.bus.subscribe(misses)
    await tg.start(run_sla_monitor, runner.bus, runner.store, runner.clock, {flow.name: flow}.get)
    return misses


async def sla_rows(runner: Runner, run_id: int) -> list[dict[str, Any]]:
    run = await runner.store.read(queries.get_run, run_id)
    return [e for e in run["events"] if e["kind"] == "sla.missed"]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_flow_sla_missed_while_running_is_recorded_once(
    make_runner: MakeRunner, clock: BlockingClock
) -> None:
    gate = Gate()
    flow = held_flow(gate, sla=60, task_sla=600)
    async with make_runner(clock=clock) as runner, anyio.create_task_group() as tg:
        misses = await start_monitor(tg, runner, flow)
        # a second monitor on the same store: the miss is detected twice, recorded once
        await tg.start(run_sla_monitor, runner.bus, runner.store, clock, {flow.name: flow}.get)
        run = start_run(tg, runner, flow)
        with anyio.fail_after(WAIT):
            await gate.started.wait()
            await clock.wait_for_sleeps(at(60), at(60))
        clock.advance(61)
        with anyio.fail_after(WAIT):
            # both monitors handled the miss and now sleep until the task's deadline
            await clock.wait_for_sleeps(at(600), at(600))
        (event,) = misses.seen
        assert (event.task, event.scope, event.sla) == (None, "flow", 60)
        (row,) = await sla_rows(runner, event.run_id)
        assert (row["task"], row["scope"], row["sla"]) == (None, "flow", 60)
        assert row["deadline"] == codec.iso(at(60))
        stored = await runner.store.read(queries.get_run, event.run_id)
        assert stored["state"] == "running"  # found while the run still went
        assert stored["sla_missed"] is True
        gate.release.set()
        assert (await run.wait()).state is RunState.SUCCEEDED
        with anyio.fail_after(WAIT):
            await clock.wait_for_sleeps()  # the run ended: no deadline is left
        tg.cancel_scope.cancel()
    assert len(misses.seen) == 1


async def test_run_ending_before_its_deadline_records_nothing(
    make_runner: MakeRunner, clock: BlockingClock
) -> None:
    gate = Gate()
    flow = held_flow(gate, sla=60)
    async with make_runner(clock=clock) as runner, anyio.create_task_group() as tg:
        misses = await start_monitor(tg, runner, flow)
        run = start_run(tg, runner, flow)
        with anyio.fail_after(WAIT):
            await clock.wait_for_sleeps(at(60))
        clock.advance(30)
        gate.release.set()
        result = await run.wait()
        with anyio.fail_after(WAIT):
            await clock.wait_for_sleeps()  # RunEnded took the deadline away
        clock.advance(3600)
        tg.cancel_scope.cancel()
    assert result.state is RunState.SUCCEEDED
    assert misses.seen == []
    async with make_runner(clock=clock) as runner:
        assert await sla_rows(runner, result.id) == []
        (listed,) = await runner.store.read(queries.list_runs)
        assert listed["sla_missed"] is False


async def test_task_sla_counts_from_the_task_start(
    make_runner: MakeRunner, clock: BlockingClock
) -> None:
    gate = Gate()
    flow = Flow("tasks")

    @flow.task(sla=20)
    def quick() -> int:
        return 1

    @flow.task(sla=30)
    async def slow(quick: int) -> int:
        gate.started.set()
        await gate.release.wait()
        return quick

    async with make_runner(clock=clock) as runner, anyio.create_task_group() as tg:
        misses = await start_monitor(tg, runner, flow)
        clock.advance(5)
        run = start_run(tg, runner, flow)
        with anyio.fail_after(WAIT):
            await gate.started.wait()
            await clock.wait_for_sleeps(at(35))  # quick ended in time: slow's deadline is left
        clock.advance(31)
        with anyio.fail_after(WAIT):
            await misses.wait(1)
        (event,) = misses.seen
        assert (event.task, event.scope, event.sla) == ("slow", "task", 30)
        gate.release.set()
        result = await run.wait()
        tg.cancel_scope.cancel()
    assert result.state is RunState.SUCCEEDED
    async with make_runner(clock=clock) as runner:
        (row,) = await sla_rows(runner, result.id)
        assert (row["task"], row["scope"], row["sla"]) == ("slow", "task", 30)
        assert row["deadline"] == codec.iso(at(35))


async def test_backfill_and_retry_runs_are_exempt_from_the_flow_sla(
    make_runner: MakeRunner, clock: BlockingClock
) -> None:
    gate = Gate()
    gate.release.set()
    flow = held_flow(gate, sla=60)
    week_ago = T0 - timedelta(days=7)
    async with make_runner(clock=clock) as runner, anyio.create_task_group() as tg:
        misses = await start_monitor(tg, runner, flow)
        backfilled = await runner.run(flow, trigger={"kind": "backfill"}, logical_date=week_ago)
        late = await runner.run(flow, logical_date=week_ago)  # a manual run, late already
        with anyio.fail_after(WAIT):
            await misses.wait(1)  # the monitor handles runs in order: backfilled came first
        tg.cancel_scope.cancel()
    assert [e.run_id for e in misses.seen] == [late.id]
    assert backfilled.state is RunState.SUCCEEDED
