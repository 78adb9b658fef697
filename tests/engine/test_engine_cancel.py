"""Cancellation, soft (RunHandle) and hard (an enclosing scope), and terminal states kept."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

from runtime import Flow, Run
from runtime.define.result import RunResult
from runtime.engine.events import Event, RunStarted, TaskStarted
from runtime.engine.handle import RunHandle
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from runtime.store.rows import RunRow
from runtime.testing import BlockingClock
from tests.conftest import MakeRunner
from tests.store.rows import attempt_row, task_row
from tests.waiting import WAIT

S = TaskState


def stored_run(db_path: Path, run_id: int | None = None) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        if run_id is None:
            (only,) = queries.list_runs(conn)
            run_id = only["id"]
        return queries.get_run(conn, run_id)


def stored_states(run: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["state"] for t in run["tasks"] if "index" not in t}


def cancellable_flow(started: anyio.Event, cleanups: list[str]) -> Flow:
    flow = Flow("cancellable")

    @flow.task(pool="single")
    async def long(run: Run) -> None:
        started.set()
        await anyio.Event().wait()

    @flow.task(pool="single")
    async def queued() -> None:  # ready, but waits for the pool's one slot
        cleanups.append("queued ran")

    @flow.task
    async def downstream(long: None) -> None:
        cleanups.append("downstream ran")

    @flow.task(after=[long, queued], run_if="all_done")
    async def cleanup() -> str:
        cleanups.append("cleanup")
        return "cleaned"

    @flow.task
    async def quick() -> int:
        return 1

    return flow


async def test_soft_cancel(make_runner: MakeRunner, db_path: Path, events: list[Event]) -> None:
    started = anyio.Event()
    ran: list[str] = []
    flow = cancellable_flow(started, ran)
    handle = RunHandle()
    out: list[RunResult] = []
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    out.append(await runner.run(flow, handle=handle))

                tg.start_soon(run)
                await started.wait()
                handle.cancel()
    (result,) = out
    assert result.state is RunState.CANCELLED
    assert {n: t.state for n, t in result.tasks.items()} == {
        "long": S.CANCELLED,
        "queued": S.CANCELLED,
        "downstream": S.CANCELLED,
        "cleanup": S.SUCCEEDED,
        "quick": S.SUCCEEDED,
    }
    assert ran == ["cleanup"]
    assert result.tasks["queued"].attempts == 0
    assert result.tasks["queued"].reason == "run cancelled"
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["state"] == "cancelled"
    assert stored_states(stored) == {n: str(t.state) for n, t in result.tasks.items()}
    started_tasks = [e.task for e in events if isinstance(e, TaskStarted)]
    assert "queued" not in started_tasks


async def test_cancel_before_the_run_starts(make_runner: MakeRunner) -> None:
    flow = Flow("cancelled-early")

    @flow.task
    async def first() -> None:
        raise AssertionError("must not run")

    @flow.task(after=[first], run_if="all_done")
    async def report() -> str:
        return "reported"

    handle = RunHandle()
    handle.cancel()
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow, handle=handle)
    assert result.state is RunState.CANCELLED
    assert result.tasks["first"].state is S.CANCELLED
    assert result["report"] == "reported"


async def test_soft_cancel_while_waiting_to_retry(make_runner: MakeRunner) -> None:
    clock = BlockingClock()  # the retry's wait lasts until cancelled
    flow = Flow("cancel-retrying")

    @flow.task(retries=3)
    async def flaky() -> None:
        raise ConnectionError("refused")

    @flow.task(run_if="all_done")
    async def report(flaky: None) -> str:
        return "reported"

    handle = RunHandle()
    out: list[RunResult] = []
    async with make_runner(clock=clock) as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    out.append(await runner.run(flow, handle=handle))

                tg.start_soon(run)
                await clock.wait_sleeping()
                handle.cancel()
    (result,) = out
    assert result.state is RunState.CANCELLED
    assert result.tasks["flaky"].state is S.CANCELLED
    assert result.tasks["flaky"].attempts == 1
    assert result["report"] == "reported"


async def test_soft_cancel_runs_all_done_task_blocked_by_another_run(
    make_runner: MakeRunner,
) -> None:
    # run 1 holds the single pool; run 2's cleanup must not wait for it once run 2 is cancelled
    holder = Flow("holder")
    holding = anyio.Event()
    release = anyio.Event()

    @holder.task(pool="single")
    async def hold() -> None:
        holding.set()
        await release.wait()

    flow = Flow("blocked")

    @flow.task(pool="single")
    async def needs_pool() -> None:
        raise AssertionError("must not run")

    @flow.task(run_if="all_done")
    async def cleanup(needs_pool: None) -> str:
        return "cleaned"

    handle = RunHandle()
    out: list[RunResult] = []
    blocked_started = anyio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted) and event.flow == "blocked":
            blocked_started.set()

    async with make_runner() as runner:
        runner.bus.subscribe(on_event)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, holder)
                await holding.wait()

                async def run() -> None:
                    out.append(await runner.run(flow, handle=handle))
                    release.set()

                tg.start_soon(run)
                await blocked_started.wait()  # run 2 dispatched at once: needs_pool is blocked
                handle.cancel()
    (result,) = out
    assert result.tasks["needs_pool"].state is S.CANCELLED
    assert result["cleanup"] == "cleaned"


async def test_hard_cancel_records_cancelled_states(
    make_runner: MakeRunner, db_path: Path, events: list[Event]
) -> None:
    started = anyio.Event()
    ran: list[str] = []
    flow = cancellable_flow(started, ran)
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, flow)
                await started.wait()
                tg.cancel_scope.cancel()
        assert runner.limits.global_slots.used == 0
        assert runner.limits.pools["single"].used == 0
    stored = await anyio.to_thread.run_sync(stored_run, db_path)
    assert stored["state"] == "cancelled"
    assert stored["ended_at"] is not None
    assert stored_states(stored) == {
        "long": "cancelled",
        "queued": "cancelled",
        "downstream": "cancelled",
        "cleanup": "cancelled",  # a hard cancel runs nothing more, all_done included
        "quick": "succeeded",
    }
    assert ran == []
    by_name = {t["name"]: t for t in stored["tasks"]}
    assert by_name["long"]["attempts"] == 1
    assert by_name["queued"]["attempts"] == 0  # never started, not even for a moment
    started_tasks = [e.task for e in events if isinstance(e, TaskStarted)]
    assert sorted(started_tasks) == ["long", "quick"]
    with closing(connect_reader(db_path)) as conn:
        attempts = queries.get_attempts(conn, stored["id"])
    assert [(a["name"], a["state"]) for a in attempts if a["name"] != "quick"] == [
        ("long", "cancelled")
    ]


async def test_hard_cancel_of_a_scope_around_the_runner(
    make_runner: MakeRunner, db_path: Path
) -> None:
    # a service stopping: the runner and its store's writer are inside the cancelled scope
    started = anyio.Event()
    flow = cancellable_flow(started, [])
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                async with make_runner() as runner:
                    await runner.run(flow)

            tg.start_soon(serve)
            await started.wait()
            tg.cancel_scope.cancel()
    stored = await anyio.to_thread.run_sync(stored_run, db_path)
    assert stored["state"] == "cancelled"
    assert stored_states(stored) == {
        "long": "cancelled",
        "queued": "cancelled",
        "downstream": "cancelled",
        "cleanup": "cancelled",
        "quick": "succeeded",
    }


async def test_hard_cancel_while_queued_for_max_active_runs(
    make_runner: MakeRunner, db_path: Path, events: list[Event]
) -> None:
    flow = Flow("queued-cancel", max_active_runs=1)
    started = anyio.Event()

    @flow.task
    async def hold() -> None:
        started.set()
        await anyio.Event().wait()

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, flow)
                await started.wait()
                tg.start_soon(runner.run, flow)
                while True:  # until run 2 is stored as waiting for run 1
                    await runner.store.flush()
                    rows = await runner.store.read(queries.list_runs, flow.name, "queued")
                    if any(r["wait_reason"] for r in rows):
                        break
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
    with closing(connect_reader(db_path)) as conn:
        runs = queries.list_runs(conn, flow.name)
    assert [r["state"] for r in runs] == ["cancelled", "cancelled"]
    assert sum(isinstance(e, RunStarted) for e in events) == 1


async def test_terminal_states_are_never_overwritten(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("final")

    @flow.task
    async def ok() -> int:
        return 1

    @flow.task
    async def bad(ok: int) -> None:
        raise ValueError("no")

    async with make_runner() as runner:
        result = await runner.run(flow)
        rid = result.id
        # a stale change arriving late (a slow thread, a replayed event)
        runner.store.put_run(RunRow(rid, "running"))
        for name in ("ok", "bad"):
            runner.store.put_task(task_row(rid, name, "running", attempts=9))
        runner.store.put_attempt(attempt_row(rid, "bad", 1, "running"))
        await runner.store.flush()
    stored = await anyio.to_thread.run_sync(stored_run, db_path, rid)
    assert stored["state"] == "failed"
    assert stored_states(stored) == {"ok": "succeeded", "bad": "failed"}
    assert {t["attempts"] for t in stored["tasks"]} == {1}
    with closing(connect_reader(db_path)) as conn:
        assert queries.stored_results(conn, rid) == {("ok", -1): 1}
        (attempt,) = [a for a in queries.get_attempts(conn, rid) if a["name"] == "bad"]
    assert attempt["state"] == "failed"


async def test_soft_cancel_reaches_a_task_dispatched_but_not_started(
    make_runner: MakeRunner, events: list[Event]
) -> None:
    flow = Flow("cancel-dispatched")
    handle = RunHandle()

    @flow.task
    async def canceller() -> int:
        handle.cancel()  # `other` was started in the same dispatch, but has not run yet
        return 1

    @flow.task
    async def other() -> None:
        raise AssertionError("must not run")

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow, handle=handle)
    assert result.state is RunState.CANCELLED
    assert result.tasks["other"].state is S.CANCELLED
    assert result.tasks["other"].attempts == 0
    assert [e.task for e in events if isinstance(e, TaskStarted)] == ["canceller"]


async def test_soft_cancel_reaches_a_task_about_to_wait_for_its_retry(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("cancel-before-retry-wait")
    handle = RunHandle()
    listening, failing = anyio.Event(), anyio.Event()

    @flow.task(retries=1)
    async def flaky() -> None:
        await listening.wait()
        failing.set()  # wakes `canceller` before the engine starts waiting to retry
        raise ConnectionError("refused")

    @flow.task
    async def canceller() -> None:
        listening.set()
        await failing.wait()
        handle.cancel()

    async with make_runner(clock=BlockingClock()) as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow, handle=handle)
    assert result.state is RunState.CANCELLED
    assert result.tasks["flaky"].state is S.CANCELLED
    assert result.tasks["flaky"].attempts == 1


async def test_soft_cancel_of_a_mapped_task(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("cancel-mapped")
    handle = RunHandle()
    both_running = anyio.Event()
    running = 0

    @flow.task
    async def items() -> list[int]:
        return list(range(10))

    @flow.task(map="items", max_concurrency=2)
    async def load(items: int) -> None:
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        await anyio.Event().wait()

    @flow.task(run_if="all_done")
    async def report(load: Any) -> str:
        return "reported"

    out: list[RunResult] = []
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    out.append(await runner.run(flow, handle=handle))

                tg.start_soon(run)
                await both_running.wait()
                handle.cancel()
        assert runner.limits.global_slots.used == 0
    (result,) = out
    mapped = result.tasks["load"]
    assert mapped.state is S.CANCELLED
    attempts = [i.attempts for i in mapped.instances or []]
    assert attempts == [1, 1] + [0] * 8
    assert {i.state for i in mapped.instances or []} == {S.CANCELLED}
    assert result["report"] == "reported"
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert {t["state"] for t in stored["tasks"] if t["name"] == "load"} == {"cancelled"}
