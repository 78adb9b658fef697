"""Limits: the highest concurrency observed under each limit, and slots given back on every path."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Run
from runtime.engine.events import Event, RunStarted
from runtime.engine.handle import RunHandle
from runtime.engine.limits import Limits
from runtime.engine.runner import Runner
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner
from tests.engine.counting import counted_takes
from tests.waiting import WAIT


class Gauge:
    """Counts tasks inside at once. The first *target* wait for each other, so the peak reaches
    the limit when the engine allows it, and exceeds it when the engine lets more in."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.current = 0
        self.peak = 0
        self.visits = 0
        self.full = anyio.Event()

    async def visit(self) -> None:
        self.current += 1
        self.visits += 1
        self.peak = max(self.peak, self.current)
        if self.current >= self.target:
            self.full.set()
        await self.full.wait()
        await anyio.lowlevel.checkpoint()  # let in whatever else the engine started
        self.current -= 1


def add_tasks(flow: Flow, count: int, gauge: Gauge, **options: Any) -> None:
    for i in range(count):

        async def work() -> None:
            await gauge.visit()

        flow.task(name=f"t{i}", **options)(work)


async def test_global_limit(make_runner: MakeRunner) -> None:
    flow = Flow("global")
    gauge = Gauge(3)
    add_tasks(flow, 12, gauge)
    async with make_runner(max_concurrency=3) as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert gauge.visits == 12
    assert gauge.peak == 3


async def test_global_limit_holds_across_runs(make_runner: MakeRunner) -> None:
    gauge = Gauge(4)
    flows = [Flow(f"global{i}") for i in range(3)]
    for flow in flows:
        add_tasks(flow, 4, gauge)
    async with make_runner(max_concurrency=4) as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for flow in flows:
                    tg.start_soon(runner.run, flow)
    assert gauge.visits == 12
    assert gauge.peak == 4


async def test_flow_max_concurrency(make_runner: MakeRunner) -> None:
    flow = Flow("flowlimit", max_concurrency=2)
    gauge = Gauge(2)
    add_tasks(flow, 8, gauge)
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            await runner.run(flow)
    assert gauge.visits == 8
    assert gauge.peak == 2


async def test_flow_max_concurrency_holds_across_its_runs(make_runner: MakeRunner) -> None:
    flow = Flow("flowlimit-runs", max_concurrency=3)
    gauge = Gauge(3)
    add_tasks(flow, 3, gauge)
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(runner.run, flow)
    assert gauge.visits == 9
    assert gauge.peak == 3


async def test_pool_size(make_runner: MakeRunner) -> None:
    flow = Flow("pooled")
    in_pool = Gauge(2)
    add_tasks(flow, 6, in_pool, pool="warehouse")
    free = Gauge(4)
    for i in range(4):

        async def unpooled() -> None:
            await free.visit()

        flow.task(name=f"free{i}")(unpooled)
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            await runner.run(flow)
    assert in_pool.peak == 2  # warehouse = 2
    assert free.peak == 4  # tasks outside the pool are not held back by it


async def test_pool_size_one_serialises(make_runner: MakeRunner) -> None:
    flow = Flow("single")
    gauge = Gauge(1)
    add_tasks(flow, 4, gauge, pool="single")
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            await runner.run(flow)
    assert gauge.visits == 4
    assert gauge.peak == 1


async def test_task_max_concurrency_on_a_mapped_task(make_runner: MakeRunner) -> None:
    flow = Flow("maplimit")
    gauge = Gauge(3)

    @flow.task
    async def items() -> list[int]:
        return list(range(20))

    @flow.task(map="items", max_concurrency=3)
    async def load(items: int) -> int:
        await gauge.visit()
        return items

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result["load"] == list(range(20))
    assert gauge.peak == 3


async def test_smallest_limit_of_the_chain_wins(make_runner: MakeRunner) -> None:
    # global 8, flow 5, pool 2, task 3: the pool bounds the mapped task
    flow = Flow("chain", max_concurrency=5)
    gauge = Gauge(2)

    @flow.task
    async def items() -> list[int]:
        return list(range(10))

    @flow.task(map="items", max_concurrency=3, pool="warehouse")
    async def load(items: int) -> None:
        await gauge.visit()

    async with make_runner(max_concurrency=8) as runner:
        with anyio.fail_after(WAIT):
            await runner.run(flow)
    assert gauge.peak == 2


async def wait_until_queued(runner: Runner, flow: str, overlap: anyio.Event) -> None:
    """Until a run of *flow* is stored as queued, or the limit was broken (*overlap* set).

    No event says "queued", so this reads the store like ``sluiceway runs --state queued``.
    """
    while not overlap.is_set():
        await runner.store.flush()
        queued = await runner.store.read(queries.list_runs, flow, "queued")
        if any(q["wait_reason"] for q in queued):
            assert "max_active_runs=1" in queued[0]["wait_reason"]
            return
        await anyio.lowlevel.checkpoint()


async def test_max_active_runs(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("one-at-a-time", max_active_runs=1)
    active: list[int] = []
    overlap = anyio.Event()
    first_started = anyio.Event()
    release = anyio.Event()
    order: list[tuple[str, int]] = []

    @flow.task
    async def work(run: Run) -> None:
        active.append(run.id)
        order.append(("start", run.id))
        if len(active) > 1:
            overlap.set()
        first_started.set()
        await release.wait()
        active.remove(run.id)
        order.append(("end", run.id))

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, flow)
                await first_started.wait()
                tg.start_soon(runner.run, flow)
                await wait_until_queued(runner, flow.name, overlap)
                release.set()
    assert not overlap.is_set()
    (_, first), (_, _), (_, second), (_, _) = order
    assert order == [("start", first), ("end", first), ("start", second), ("end", second)]
    with closing(connect_reader(db_path)) as conn:
        runs = {r["id"]: r for r in queries.list_runs(conn, flow.name)}
    assert {r["state"] for r in runs.values()} == {"succeeded"}
    assert runs[second]["started_at"] >= runs[first]["ended_at"]


# --- slots are given back on every path ---


def used(runner: Runner, flow: Flow) -> tuple[int, int, int]:
    flow_slots = runner.limits.flow_slots(flow.name, flow.max_concurrency)
    assert flow_slots is not None
    return (
        runner.limits.global_slots.used,
        flow_slots.used,
        runner.limits.pools["warehouse"].used,
    )


async def _success(started: anyio.Event) -> None:
    started.set()


async def _error(started: anyio.Event) -> None:
    started.set()
    raise RuntimeError("boom")


async def _forever(started: anyio.Event) -> None:
    started.set()
    await anyio.Event().wait()


PATHS: dict[str, tuple[Callable[[anyio.Event], Any], dict[str, Any]]] = {
    "success": (_success, {}),
    "error": (_error, {}),
    "timeout": (_forever, {"timeout": 0.05}),
    "soft-cancel": (_forever, {}),
    "hard-cancel": (_forever, {}),
}
EXPECTED = {
    "success": TaskState.SUCCEEDED,
    "error": TaskState.FAILED,
    "timeout": TaskState.FAILED,
    "soft-cancel": TaskState.CANCELLED,
    "hard-cancel": TaskState.CANCELLED,
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_slots_are_given_back(make_runner: MakeRunner, db_path: Path, path: str) -> None:
    body, options = PATHS[path]
    flow = Flow(f"slots-{path}", max_concurrency=4)
    started = anyio.Event()
    inside: list[tuple[int, int, int]] = []

    @flow.task(pool="warehouse", **options)
    async def work() -> None:
        inside.append(used(runner, flow))
        await body(started)

    handle = RunHandle()
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def start_run() -> None:
                    await runner.run(flow, handle=handle)

                tg.start_soon(start_run)
                await started.wait()
                if path == "soft-cancel":
                    handle.cancel()
                elif path == "hard-cancel":
                    tg.cancel_scope.cancel()
        assert inside == [(1, 1, 1)]  # the task held one slot of each while it ran
        assert used(runner, flow) == (0, 0, 0)
    with closing(connect_reader(db_path)) as conn:
        (listed,) = queries.list_runs(conn, flow.name)
        stored = queries.get_run(conn, listed["id"])
    assert stored["tasks"][0]["state"] == EXPECTED[path]


async def test_slot_given_back_lets_the_next_task_run(make_runner: MakeRunner) -> None:
    # a failed, a timed-out and a cancelled-by-rule task in pool single, then one that succeeds
    flow = Flow("single-after-failures")

    @flow.task(pool="single")
    async def fails() -> None:
        raise RuntimeError("boom")

    @flow.task(pool="single", timeout=0.05, after=[fails], run_if="all_done")
    async def times_out() -> None:
        await anyio.Event().wait()

    @flow.task(pool="single", after=[times_out], run_if="all_done")
    async def last() -> str:
        return "ran"

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
        assert runner.limits.pools["single"].used == 0
    assert result["last"] == "ran"


async def test_slots_back_after_many_runs_of_mixed_outcome(
    make_runner: MakeRunner, events: list[Event]
) -> None:
    flow = Flow("mixed-outcomes", max_concurrency=2)

    @flow.task(pool="warehouse")
    async def ok() -> int:
        return 1

    @flow.task(pool="single")
    async def bad(ok: int) -> int:
        raise ValueError("no")

    @flow.task(pool="warehouse", run_if="all_done")
    def cleanup(bad: int) -> None:
        pass

    async with make_runner(max_concurrency=3) as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(runner.run, flow)
        limits = runner.limits
        assert limits.global_slots.used == 0
        assert {name: s.used for name, s in limits.pools.items()} == {"warehouse": 0, "single": 0}
    assert sum(isinstance(e, RunStarted) for e in events) == 10


async def test_a_task_waiting_for_a_full_pool_says_so(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("pooled")
    holding, release = anyio.Event(), anyio.Event()

    @flow.task(pool="single")
    async def first() -> None:
        holding.set()
        await release.wait()

    @flow.task(pool="single")
    async def second() -> int:
        return 2

    async with make_runner() as runner, anyio.create_task_group() as tg:
        tg.start_soon(runner.run, flow)
        with anyio.fail_after(WAIT):
            await holding.wait()
            await runner.store.flush()
        with closing(connect_reader(db_path)) as conn:
            waiting = {t["name"]: t for t in queries.get_run(conn, 1)["tasks"]}["second"]
        release.set()
    assert (waiting["state"], waiting["reason"]) == (
        "pending",
        "waiting for a slot: pool single is full",
    )
    with closing(connect_reader(db_path)) as conn:
        done = {t["name"]: t for t in queries.get_run(conn, 1)["tasks"]}["second"]
    assert (done["state"], done["reason"]) == ("succeeded", None)


def wide_flow(name: str, count: int, **options: Any) -> Flow:
    flow = Flow(name)
    for i in range(count):

        async def work() -> None:
            return None

        flow.task(name=f"t{i}", **options)(work)
    return flow


@pytest.mark.parametrize(
    ("shape", "limits"),
    [
        ("10,000 ready tasks behind the global limit", {"max_concurrency": 32}),
        ("behind a flow limit", {"max_concurrency": 1000, "flow_limit": 8}),
        ("behind a pool", {"max_concurrency": 32, "pool": "warehouse"}),
    ],
)
@pytest.mark.slow
async def test_dispatch_work_per_started_task_is_bounded(
    make_runner: MakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
    limits: dict[str, Any],
) -> None:
    """Starting a task costs a bounded number of take() calls however many are ready (it
    was quadratic: each released slot tried every ready task)."""
    n = 10_000
    options = {"pool": limits["pool"]} if "pool" in limits else {}
    flow = wide_flow("wide", n, **options)
    if "flow_limit" in limits:
        flow.max_concurrency = limits["flow_limit"]
    with counted_takes(monkeypatch) as takes:
        async with make_runner(max_concurrency=limits["max_concurrency"]) as runner:
            with anyio.fail_after(60):
                result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert takes[0] < 3 * n, f"{takes[0]} take() calls for {n} tasks ({shape})"


@pytest.mark.slow
async def test_mapped_instances_behind_a_task_limit_cost_a_bounded_dispatch(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Flow("map")
    n = 10_000

    @flow.task
    async def items() -> list[int]:
        return list(range(n))

    @flow.task(map="items", max_concurrency=4)
    async def each(items: int) -> int:
        return items

    with counted_takes(monkeypatch) as takes:
        async with make_runner() as runner:
            with anyio.fail_after(60):
                result = await runner.run(flow)
    assert len(result["each"]) == n
    assert takes[0] < 3 * n


@pytest.mark.slow
async def test_many_runs_waiting_at_once_cost_a_bounded_dispatch(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 runs of 50 ready tasks each, all behind one global limit of 32, half of each run
    also behind a pool."""
    runs, per_run = 200, 50
    flow = Flow("many")
    for i in range(per_run):

        async def work() -> None:
            return None

        flow.task(name=f"t{i}", pool="warehouse" if i % 2 else None)(work)
    results: list[RunState] = []
    with counted_takes(monkeypatch) as takes, anyio.fail_after(60):
        async with make_runner(max_concurrency=32) as runner, anyio.create_task_group() as tg:

            async def one() -> None:
                results.append((await runner.run(flow)).state)

            for _ in range(runs):
                tg.start_soon(one)
    assert results == [RunState.SUCCEEDED] * runs
    assert takes[0] < 4 * runs * per_run, f"{takes[0]} take() calls"


async def test_a_pool_blocked_task_does_not_stop_a_task_of_another_pool(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("pools")
    release = anyio.Event()
    started: list[str] = []

    for i in range(3):

        async def hold(run: Run) -> None:
            started.append(run.task)
            await release.wait()

        flow.task(name=f"single{i}", pool="single")(hold)

    @flow.task(pool="warehouse")
    async def other() -> None:
        started.append("other")
        release.set()  # only reached if the pool-blocked tasks did not stop it

    async with make_runner(max_concurrency=4) as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert started[:2] == ["single0", "other"]


async def test_runs_waiting_for_max_active_runs_are_admitted_one_by_one(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 runs of a max_active_runs=1 flow started at once in one process: each finished
    run admits the next in order, without waking every waiting run (that was O(n²))."""
    flow = Flow("one-at-a-time", max_active_runs=1)
    order: list[int] = []

    @flow.task
    async def work(run: Run) -> None:
        order.append(run.params["n"])

    flow.params = {"n": 0}
    calls = [0]
    real = Limits.try_admit_run

    def counted(self: Limits, name: str, limit: int | None) -> bool:
        calls[0] += 1
        return real(self, name, limit)

    monkeypatch.setattr(Limits, "try_admit_run", counted)
    n = 300
    with anyio.fail_after(60):
        async with make_runner() as runner, anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(runner.run, flow, {"n": i})
                await anyio.lowlevel.checkpoint()  # started in this order
    assert order == list(range(n))
    assert calls[0] <= 2 * n, f"{calls[0]} admission checks for {n} runs"
