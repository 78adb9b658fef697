"""on_flow triggers in process, on real SQLite: upstream runs (and tasks) that end become
queued downstream runs exactly once, from the bus at once and from the store on every pass
(start-up, reloads, other processes' runs), with the trigger record in ``run.trigger``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Run, on_flow
from runtime.define.sources import FlowTrigger
from runtime.engine.runner import Runner
from runtime.service.context import ServiceContext
from runtime.service.queue import RunQueue
from runtime.service.recovery import Recovery
from runtime.service.runs import ActiveRuns
from runtime.service.upstream import Upstreams
from runtime.store.cursors import set_paused
from tests.conftest import MakeRunner
from tests.store.rows import peek
from tests.waiting import WAIT

Seen = list[dict[str, Any]]


def make_flow(
    name: str,
    *,
    triggers: Iterable[FlowTrigger] = (),
    fail: bool = False,
    seen: Seen | None = None,
) -> Flow:
    """A flow of one task ``work`` that notes its ``run.trigger`` in *seen*, then fails when
    *fail*."""
    flow = Flow(name, params={"day": name}, triggers=list(triggers))

    @flow.task
    def work(run: Run) -> str:
        if seen is not None:
            seen.append({"kind": run.trigger.kind, **dict(run.trigger)})
        if fail:
            raise RuntimeError("boom")
        return name

    return flow


@dataclass
class Served:
    ctx: ServiceContext
    upstreams: Upstreams

    async def passes(self, count: int = 1) -> None:
        """Wait until *count* more passes are done."""
        target = self.upstreams.passes + count
        await until(lambda: self.upstreams.passes >= target, f"{count} more pass(es)")


@asynccontextmanager
async def serving(
    runner: Runner, *flows: Flow, poll: float = 60.0, execute: bool = False
) -> AsyncIterator[Served]:
    """The on_flow part of the service on *runner* (and with *execute*, its run queue, so
    queued runs run); entered once the start-up pass is done. A long *poll*: only the bus
    and reloads wake it."""
    ctx = ServiceContext(
        config=runner.config, runner=runner, flows={f.name: f for f in flows}, epoch=runner.epoch
    )
    upstreams = Upstreams(ctx, poll=poll)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            if execute:
                runs = ActiveRuns(ctx, on_end=lambda: None)
                runs.group = tg
                await tg.start(RunQueue(ctx, runs, Recovery(ctx, runs)).run)
            await tg.start(upstreams.run)
            yield Served(ctx, upstreams)
            tg.cancel_scope.cancel()


async def until(check: Callable[[], object], what: str) -> None:
    """Poll *check* (it reads the database) until it holds, within the test's deadline."""
    with anyio.fail_after(WAIT):
        while not check():  # noqa: ASYNC110 - a database row has no event to wait on
            await anyio.sleep(0.01)


def runs_of(db: Path, flow: str) -> list[tuple[int, str, str, str | None, str]]:
    """(id, state, trigger, idempotency_key, logical_date) of *flow*'s runs, in id order."""
    return [
        (int(r[0]), r[1], r[2], r[3], r[4])
        for r in peek(
            db,
            "SELECT id, state, trigger, idempotency_key, logical_date FROM runs "
            "WHERE flow = ? ORDER BY id",
            (flow,),
        )
    ]


def triggers_of(db: Path, flow: str) -> list[dict[str, Any]]:
    import orjson

    return [orjson.loads(r[2]) for r in runs_of(db, flow)]


def cursor_of(db: Path, flow: str, spec: FlowTrigger) -> int | None:
    rows = peek(
        db,
        "SELECT cursor FROM upstream_cursors WHERE flow = ? AND trigger = ?",
        (flow, str(spec)),
    )
    return int(rows[0][0]) if rows else None


# --- whole runs ---


async def test_a_succeeded_upstream_run_queues_one_downstream_run_with_its_record(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    report = make_flow("report", triggers=[on_flow("orders")])
    async with make_runner() as runner, serving(runner, orders, report):
        done = await runner.run(orders, {"day": "monday"})
        await until(lambda: runs_of(db_path, "report"), "a report run")
    [(_, state, _, key, logical)] = runs_of(db_path, "report")
    [(_, _, _, _, upstream_logical)] = runs_of(db_path, "orders")
    assert state == "queued"
    assert key == f"flow:orders:{done.id}"
    assert logical == upstream_logical  # the chain's runs are for the same date
    assert triggers_of(db_path, "report") == [
        {
            "kind": "flow",
            "flow": "orders",
            "run_id": done.id,
            "state": "succeeded",
            "logical_date": upstream_logical,
            "params": {"day": "monday"},
        }
    ]


async def test_the_downstream_task_reads_the_record_as_run_trigger(
    make_runner: MakeRunner,
) -> None:
    seen: Seen = []
    orders = make_flow("orders")
    report = make_flow("report", triggers=[on_flow("orders")], seen=seen)
    async with make_runner() as runner, serving(runner, orders, report, execute=True):
        done = await runner.run(orders)
        await until(lambda: seen, "the report run's task")
    [trigger] = seen
    assert trigger["kind"] == "flow"
    assert trigger["flow"] == "orders"
    assert trigger["run_id"] == done.id
    assert trigger["state"] == "succeeded"
    assert trigger["params"] == {"day": "orders"}
    assert trigger["logical_date"].startswith("2026-01-01T00:00:00")


async def test_a_failed_upstream_run_does_not_start_a_success_trigger(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders", fail=True)
    ok = make_flow("ok", triggers=[on_flow("orders")])
    on_failure = make_flow("alarm", triggers=[on_flow("orders", state="failed")])
    async with make_runner() as runner, serving(runner, orders, ok, on_failure):
        failed = await runner.run(orders)
        await until(lambda: runs_of(db_path, "alarm"), "the alarm run")
    assert failed.state == "failed"
    assert runs_of(db_path, "ok") == []
    assert [t["state"] for t in triggers_of(db_path, "alarm")] == ["failed"]


async def test_a_list_of_states_fires_for_each_of_them_only(
    make_runner: MakeRunner, db_path: Path
) -> None:
    good, bad = make_flow("orders"), make_flow("orders", fail=True)
    cleanup = make_flow("cleanup", triggers=[on_flow("orders", state=["failed", "cancelled"])])
    async with make_runner() as runner, serving(runner, good, cleanup) as served:
        first = await runner.run(good)
        served.ctx.replace_flows({"orders": bad, "cleanup": cleanup})
        await served.passes()
        second = await runner.run(bad)
        await until(lambda: runs_of(db_path, "cleanup"), "a cleanup run")
        third = await runner.run(bad)
        await until(lambda: len(runs_of(db_path, "cleanup")) == 2, "a second cleanup run")
    assert first.state == "succeeded"
    assert [t["run_id"] for t in triggers_of(db_path, "cleanup")] == [
        second.id,
        third.id,
    ]


async def test_a_chain_a_b_c_runs_each_once(make_runner: MakeRunner, db_path: Path) -> None:
    seen: Seen = []
    a = make_flow("a")
    b = make_flow("b", triggers=[on_flow("a")])
    c = make_flow("c", triggers=[on_flow("b")], seen=seen)
    async with make_runner() as runner, serving(runner, a, b, c, execute=True):
        await runner.run(a)
        await until(lambda: seen, "the c run")
    [(b_id, b_state, *_)] = runs_of(db_path, "b")
    [(_, c_state, *_)] = runs_of(db_path, "c")
    assert (b_state, c_state) == ("succeeded", "succeeded")
    assert seen[0]["flow"] == "b"
    assert seen[0]["run_id"] == b_id


async def test_a_paused_downstream_flow_still_gets_its_run_queued(
    make_runner: MakeRunner, db_path: Path, clock: Any
) -> None:
    orders = make_flow("orders")
    report = make_flow("report", triggers=[on_flow("orders")])
    async with make_runner() as runner, serving(runner, orders, report):
        await set_paused(runner.store, "report", True, clock.now())
        await runner.run(orders)
        await until(lambda: runs_of(db_path, "report"), "a report run")
    assert [r[1] for r in runs_of(db_path, "report")] == ["queued"]


# --- tasks ---


def staged(name: str, *, fail_late: bool = False, mapped: bool = False) -> Flow:
    """extract -> load -> late; load is mapped over extract's items with *mapped*; late
    fails with *fail_late* (the run fails after load succeeded)."""
    flow = Flow(name)

    @flow.task
    def extract() -> list[int]:
        return [1, 2, 3]

    if mapped:

        @flow.task(map="extract")
        def load(extract: int) -> int:
            return extract

    else:

        @flow.task
        def load(extract: list[int]) -> int:
            return len(extract)

    @flow.task
    def late(load: Any) -> None:
        if fail_late:
            raise RuntimeError("late")

    return flow


async def test_a_task_trigger_fires_when_that_task_ends_even_if_the_run_fails(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = staged("orders", fail_late=True)
    spec = on_flow("orders", task="load")
    publish = make_flow("publish", triggers=[spec])
    never = make_flow("never", triggers=[on_flow("orders", task="late")])
    async with make_runner() as runner, serving(runner, orders, publish, never):
        done = await runner.run(orders)
        await until(lambda: runs_of(db_path, "publish"), "a publish run")
    assert done.state == "failed"
    [(_, _, _, key, _)] = runs_of(db_path, "publish")
    assert key == f"flow:orders:{done.id}:load"
    [record] = triggers_of(db_path, "publish")
    assert record["task"] == "load"
    assert record["state"] == "succeeded"
    assert record["run_id"] == done.id
    assert runs_of(db_path, "never") == []  # late failed; its trigger wants succeeded


async def test_a_mapped_task_fires_once_as_itself_not_per_instance(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = staged("orders", mapped=True)
    publish = make_flow("publish", triggers=[on_flow("orders", task="load")])
    async with make_runner() as runner, serving(runner, orders, publish) as served:
        done = await runner.run(orders)
        await until(lambda: runs_of(db_path, "publish"), "a publish run")
        served.upstreams.look_again()  # one more full pass finds nothing more
        await served.passes()
    assert len(done.tasks["load"].instances or []) == 3
    assert [t["task"] for t in triggers_of(db_path, "publish")] == ["load"]


# --- the store is the truth: start-up, reloads, other processes ---


async def test_history_does_not_fire_and_a_reload_adds_a_trigger_from_now_on(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    spec = on_flow("orders")
    report = make_flow("report", triggers=[spec])
    async with make_runner() as runner:
        before = await runner.run(orders)
        async with serving(runner, orders) as served:
            during = await runner.run(orders)
            served.ctx.replace_flows({"orders": orders, "report": report})
            await served.passes()
            assert runs_of(db_path, "report") == []  # neither run before the trigger existed
            assert cursor_of(db_path, "report", spec) == during.id
            after = await runner.run(orders)
            await until(lambda: runs_of(db_path, "report"), "a report run")
    assert before.id < during.id < after.id
    assert [t["run_id"] for t in triggers_of(db_path, "report")] == [after.id]


async def test_runs_that_ended_while_the_service_was_down_fire_once_at_start(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    spec = on_flow("orders")
    report = make_flow("report", triggers=[spec])
    async with make_runner() as runner:
        async with serving(runner, orders, report):
            pass  # the trigger is seen: its cursor starts
        ended = [await runner.run(orders), await runner.run(orders)]  # nobody listening
        assert runs_of(db_path, "report") == []
        async with serving(runner, orders, report):
            made = runs_of(db_path, "report")  # the start-up pass is done
        async with serving(runner, orders, report):
            again = runs_of(db_path, "report")
    assert [t["run_id"] for t in triggers_of(db_path, "report")] == [r.id for r in ended]
    assert again == made
    assert cursor_of(db_path, "report", spec) == ended[-1].id


async def test_a_run_executed_by_another_process_fires_at_the_next_periodic_pass(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    report = make_flow("report", triggers=[on_flow("orders")])
    async with make_runner() as runner, serving(runner, orders, report, poll=0.05):
        # another runner on the same file: its bus is not the service's
        async with make_runner() as other:
            elsewhere = await other.run(orders)
        await until(lambda: runs_of(db_path, "report"), "a report run")
    assert [t["run_id"] for t in triggers_of(db_path, "report")] == [elsewhere.id]


async def test_an_unloaded_downstream_flow_keeps_its_cursor_and_catches_up(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    spec = on_flow("orders")
    report = make_flow("report", triggers=[spec])
    async with make_runner() as runner, serving(runner, orders, report, poll=0.05) as served:
        start = cursor_of(db_path, "report", spec)
        served.ctx.replace_flows({"orders": orders})  # report's file went away
        await served.passes()
        away = await runner.run(orders)
        await served.passes()
        assert runs_of(db_path, "report") == []
        assert cursor_of(db_path, "report", spec) == start
        served.ctx.replace_flows({"orders": orders, "report": report})
        await until(lambda: runs_of(db_path, "report"), "the caught-up report run")
    assert [t["run_id"] for t in triggers_of(db_path, "report")] == [away.id]


async def test_the_cursor_stops_below_an_upstream_run_that_has_not_ended(
    make_runner: MakeRunner, db_path: Path, clock: Any
) -> None:
    orders = make_flow("orders")
    spec = on_flow("orders")
    report = make_flow("report", triggers=[spec])
    async with make_runner() as runner, serving(runner, orders, report, poll=0.05) as served:
        start = cursor_of(db_path, "report", spec)
        assert start is not None
        queued, _ = await runner.store.create_run(
            flow="orders", params={}, trigger={}, logical_date=clock.now(), created_at=clock.now()
        )
        later = await runner.run(orders)
        await until(lambda: runs_of(db_path, "report"), "the later run's report run")
        await served.passes(2)
        assert cursor_of(db_path, "report", spec) == queued - 1
        claimed = await runner.store.claim_runs([queued], runner.epoch, clock.now())
        await runner.run_claimed(orders, queued, claimed[queued])
        await until(lambda: len(runs_of(db_path, "report")) == 2, "the queued run's report run")
        await served.passes(2)
        assert cursor_of(db_path, "report", spec) == later.id
    assert [t["run_id"] for t in triggers_of(db_path, "report")] == [later.id, queued]


async def test_two_triggers_on_the_same_upstream_run_make_one_downstream_run(
    make_runner: MakeRunner, db_path: Path
) -> None:
    orders = make_flow("orders")
    report = make_flow(
        "report", triggers=[on_flow("orders"), on_flow("orders", state=["succeeded", "failed"])]
    )
    async with make_runner() as runner, serving(runner, orders, report) as served:
        await runner.run(orders)
        await until(lambda: runs_of(db_path, "report"), "a report run")
        served.upstreams.look_again()
        await served.passes()
    assert len(runs_of(db_path, "report")) == 1


@pytest.mark.parametrize("state", ["succeeded", "failed"])
async def test_the_bus_wakes_the_pass_at_once(
    make_runner: MakeRunner, db_path: Path, state: str
) -> None:
    orders = make_flow("orders", fail=state == "failed")
    report = make_flow("report", triggers=[on_flow("orders", state=state)])
    async with make_runner() as runner, serving(runner, orders, report, poll=3600) as served:
        before = served.upstreams.passes
        await runner.run(orders)
        await until(lambda: served.upstreams.passes > before, "a pass")  # not the hourly one
        assert len(runs_of(db_path, "report")) == 1
