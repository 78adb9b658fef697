"""The tick loop on real SQLite with a stepped fake clock: start-up catch-up from the stored
cursor, exactly-once runs under repeats, races and restarts, pause/unpause, reloads, clock jumps."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.define.flow import Flow
from runtime.define.triggers import TimeTrigger, cron, every
from runtime.engine.runner import Runner
from runtime.scheduling import agenda
from runtime.scheduling import ticker as scheduler
from runtime.scheduling.planner import Plan
from runtime.scheduling.ticker import LEAD, MAX_WAIT, plan_startup, run_scheduler, tick
from runtime.service.context import ServiceContext
from runtime.store import cursors, open_store
from runtime.testing import BlockingClock
from tests.conftest import MakeRunner
from tests.store.rows import peek
from tests.waiting import WAIT

HOURLY = every("1h")
KEY = str(HOURLY)


def utc(hour: int, minute: int = 0, second: float = 0, day: int = 10) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def hourly_flow(name: str = "etl", **options: Any) -> Flow:
    options.setdefault("triggers", [HOURLY])
    flow = Flow(name, params={"day": "today"}, **options)

    @flow.task
    def work() -> None:
        return None

    return flow


def context(runner: Runner, *flows: Flow) -> ServiceContext:
    return ServiceContext(
        config=runner.config, runner=runner, flows={f.name: f for f in flows}, epoch=0
    )


def loop(ctx: ServiceContext, lead: float = 0.0) -> Callable[..., Coroutine[Any, Any, None]]:
    """The tick loop on the service's flows, store and clock, to start with ``tg.start``.

    No lead by default: sleeps in these tests are whole waits; the lead is tested on its own.
    """
    return functools.partial(
        run_scheduler,
        ctx.store,
        ctx.clock,
        lambda: ctx.flows,
        lambda: ctx.flows_changed,
        ctx.wake_queue,
        lead=lead,
    )


async def one_pass(ctx: ServiceContext) -> None:
    await tick(ctx.store, ctx.clock, ctx.flows, ctx.wake_queue)


@asynccontextmanager
async def scheduling(ctx: ServiceContext, lead: float = 0.0) -> AsyncIterator[None]:
    """Run the loop; enter once the start-up pass is committed and the loop sleeps."""
    assert isinstance(ctx.clock, BlockingClock)
    naps = ctx.clock.naps
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            await tg.start(loop(ctx, lead))
            await ctx.clock.wait_naps(naps + 1)
            yield
            tg.cancel_scope.cancel()


def scheduled(db: Path, flow: str = "etl") -> list[str]:
    """The logical dates of the flow's runs, in id order."""
    return [
        row[0]
        for row in peek(db, "SELECT logical_date FROM runs WHERE flow = ? ORDER BY id", (flow,))
    ]


def cursor(db: Path, flow: str = "etl", key: str = KEY) -> str | None:
    rows = peek(db, "SELECT cursor FROM schedules WHERE flow = ? AND trigger = ?", (flow, key))
    return rows[0][0] if rows else None


async def seed_cursor(runner: Runner, flow: Flow, at: datetime, key: str = KEY) -> None:
    await cursors.fire_scheduled(
        runner.store, flow=flow, trigger_key=key, instants=[], cursor=at, now=at
    )


# --- the start-up pass ---


async def test_started_after_the_start_up_runs_are_committed(
    make_runner: MakeRunner, db_path: Path
) -> None:
    clock = BlockingClock(utc(10, 0, 0.5))
    flow = hourly_flow()
    async with make_runner(clock=clock) as runner:
        ctx = context(runner, flow)
        queue_changed = ctx.queue_changed
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                await tg.start(loop(ctx))
                # read on another connection: committed, not just queued in the writer
                assert scheduled(db_path) == [iso(utc(10))]
                tg.cancel_scope.cancel()
    assert queue_changed.is_set()
    rows = peek(db_path, "SELECT state, params, trigger, idempotency_key, created_at FROM runs")
    assert rows == [
        (
            "queued",
            '{"day":"today"}',
            f'{{"kind":"schedule","spec":"{KEY}","scheduled":"{iso(utc(10))}"}}',
            f"schedule:{iso(utc(10))}",
            iso(utc(10, 0, 0.5)),
        )
    ]
    assert cursor(db_path) == iso(utc(10))
    assert rows[0][3] == cursors.run_key(utc(10))  # the key backfill makes too


@pytest.mark.parametrize(
    ("catchup", "now", "expected"),
    [
        ("none", utc(10, 5), []),
        ("none", utc(10, 0, 30), [utc(10)]),
        ("latest", utc(10, 5), [utc(10)]),
        ("all", utc(10, 5), [utc(8), utc(9), utc(10)]),
    ],
    ids=["none-late", "none-on-time", "latest", "all-up-to-max"],
)
async def test_start_up_catch_up_from_the_stored_cursor(
    make_runner: MakeRunner,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    catchup: str,
    now: datetime,
    expected: list[datetime],
) -> None:
    monkeypatch.setattr(logging.getLogger("sluiceway"), "propagate", True)
    caplog.set_level(logging.INFO, logger="sluiceway.runtime.scheduler")
    flow = hourly_flow(catchup=catchup, max_catchup=3)
    clock = BlockingClock(now)
    async with make_runner(clock=clock) as runner:
        await seed_cursor(runner, flow, utc(5))
        async with scheduling(context(runner, flow)):
            pass
    assert scheduled(db_path) == [iso(t) for t in expected]
    assert cursor(db_path) == iso(utc(10))
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert f"skipped {5 - len(expected)} missed instant(s)" in skipped[0].getMessage()
    assert skipped[0].levelno == (logging.WARNING if catchup == "all" else logging.INFO)


async def test_a_new_trigger_starts_its_cursor_at_start_so_later_downtime_is_caught_up(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow()
    clock = BlockingClock(utc(10, 30))
    async with make_runner(clock=clock) as runner:
        async with scheduling(context(runner, flow)):
            pass
        assert scheduled(db_path) == []
        assert cursor(db_path) == iso(utc(10, 30))
    # down from 10:30 to 14:10: 11:00 ... 14:00 were missed; "latest" runs 14:00
    clock.advance(3 * 3600 + 40 * 60)
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        pass
    assert scheduled(db_path) == [iso(utc(14))]


async def test_plan_startup_writes_nothing(make_runner: MakeRunner, db_path: Path) -> None:
    flow = hourly_flow(catchup="all", max_catchup=2)
    async with make_runner(clock=BlockingClock(utc(10, 5))) as runner:
        await seed_cursor(runner, flow, utc(6))
        plans = await plan_startup(runner.store, {flow.name: flow}, utc(10, 5))
        assert peek(db_path, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert [(p.flow.name, p.key, p.last, p.plan) for p in plans] == [
        (
            "etl",
            KEY,
            utc(6),
            Plan(
                fire=(utc(9), utc(10)),
                skipped=2,
                first_skipped=utc(7),
                last_skipped=utc(8),
                cursor=utc(10),
                next=utc(11),
            ),
        )
    ]
    assert cursor(db_path) == iso(utc(6))


async def test_plan_startup_fires_nothing_for_a_paused_flow(make_runner: MakeRunner) -> None:
    flow = hourly_flow()
    async with make_runner() as runner:
        await seed_cursor(runner, flow, utc(6))
        await cursors.set_paused(runner.store, "etl", True, utc(7))
        plans = await plan_startup(runner.store, {flow.name: flow}, utc(10, 5))
    assert [(p.paused, p.plan, p.firing) for p in plans] == [(True, Plan(cursor=utc(6)), None)]


# --- exactly once ---


async def test_firing_the_same_instants_twice_makes_each_run_once(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow()
    instants = [utc(9), utc(10)]
    async with make_runner() as runner:
        first = await cursors.fire_scheduled(
            runner.store, flow=flow, trigger_key=KEY, instants=instants, cursor=utc(10), now=utc(10)
        )
        again = await cursors.fire_scheduled(
            runner.store, flow=flow, trigger_key=KEY, instants=instants, cursor=utc(10), now=utc(10)
        )
    assert len(first) == 2
    assert again == []
    assert scheduled(db_path) == [iso(utc(9)), iso(utc(10))]


async def test_a_cursor_never_moves_back(make_runner: MakeRunner, db_path: Path) -> None:
    flow = hourly_flow()
    async with make_runner() as runner:
        await seed_cursor(runner, flow, utc(10, 0, 0.5))
        await seed_cursor(runner, flow, utc(10))  # a slower racer, or a clock stepped back
    assert cursor(db_path) == iso(utc(10, 0, 0.5))


async def test_the_same_pass_twice_makes_no_second_run(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow()
    async with make_runner(clock=BlockingClock(utc(10, 0, 1))) as runner:
        ctx = context(runner, flow)
        await one_pass(ctx)
        await one_pass(ctx)
        # a pass from a stale cursor (a crash before the cursor was read back) is still once
        await runner.store.writer.submit(lambda db: db.execute("DELETE FROM schedules"))
        await one_pass(ctx)
    assert scheduled(db_path) == [iso(utc(10))]


async def test_two_schedulers_on_one_database_race_to_one_run_per_instant(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow(catchup="all", max_catchup=10)
    clock = BlockingClock(utc(10, 5))
    async with make_runner(clock=clock) as first, make_runner(clock=clock) as second:
        await seed_cursor(first, flow, utc(5))
        contexts = [context(first, flow), context(second, flow)]
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for ctx in contexts:
                    tg.start_soon(one_pass, ctx)
    assert scheduled(db_path) == [iso(utc(h)) for h in range(6, 11)]


async def test_a_restart_continues_from_the_stored_cursor(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow(catchup="all")
    clock = BlockingClock(utc(10, 0, 0.2))
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        await clock.step(3600)  # 11:00:00.2
    assert scheduled(db_path) == [iso(utc(10)), iso(utc(11))]
    clock.advance(2.5 * 3600)  # down until 13:30
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        pass
    assert scheduled(db_path) == [iso(utc(h)) for h in (10, 11, 12, 13)]


# --- the loop ---


async def test_the_loop_sleeps_until_the_next_instant_but_at_most_max_wait(
    make_runner: MakeRunner, db_path: Path
) -> None:
    clock = BlockingClock(utc(10, 0, 3))
    flow = hourly_flow(triggers=[every("10s"), HOURLY])
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        assert clock.sleeps == [7.0]
        await clock.step(7)
        await clock.step(10)
        assert clock.sleeps == [7.0, 10.0, 10.0]
    # both triggers fire at 10:00: a run's identity is (flow, instant), so one run
    assert scheduled(db_path) == [iso(utc(10, 0, s)) for s in (0, 10, 20)]
    hourly_only = hourly_flow("slow")
    clock = BlockingClock(utc(10, 5))
    async with make_runner(clock=clock) as runner, scheduling(context(runner, hourly_only)):
        assert clock.sleeps == [MAX_WAIT]


async def test_a_clock_jump_forward_goes_through_the_catch_up_policy(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow(catchup="all", max_catchup=4)
    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        assert clock.sleeps == [MAX_WAIT]
        await clock.step(24 * 3600 + 600)  # suspended for a day: 10:10 the day after
        assert clock.sleeps[-1] == MAX_WAIT
    assert scheduled(db_path) == [iso(utc(10))] + [iso(utc(h, day=11)) for h in (7, 8, 9, 10)]
    assert cursor(db_path) == iso(utc(10, day=11))


async def test_a_reload_wakes_the_loop(make_runner: MakeRunner, db_path: Path) -> None:
    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner:
        ctx = context(runner)  # no flows yet: the loop sleeps MAX_WAIT
        async with scheduling(ctx):
            naps = clock.naps
            ctx.replace_flows({"etl": hourly_flow()})
            await clock.wait_naps(naps + 1)  # without advancing the clock
            assert scheduled(db_path) == [iso(utc(10))]


# --- pause ---


async def test_a_paused_flow_makes_no_runs_and_keeps_its_cursor(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow, other = hourly_flow(), hourly_flow("other")
    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow, other)):
        # paused from another process (its own connection) while the loop sleeps
        async with open_store(db_path) as cli:
            assert await cursors.set_paused(cli, "etl", True, clock.now())
            assert not await cursors.set_paused(cli, "etl", True, clock.now())
        await clock.step(3 * 3600)  # 13:00:00.5
    assert scheduled(db_path) == [iso(utc(10))]
    assert cursor(db_path) == iso(utc(10))
    assert scheduled(db_path, "other") == [iso(utc(10)), iso(utc(13))]


async def test_a_flow_paused_when_the_runs_commit_gets_none(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = hourly_flow()
    async with make_runner() as runner:
        await seed_cursor(runner, flow, utc(8))
        await cursors.set_paused(runner.store, "etl", True, utc(9))
        made = await cursors.fire_scheduled(
            runner.store, flow=flow, trigger_key=KEY, instants=[utc(9)], cursor=utc(9), now=utc(9)
        )
    assert made == []
    assert scheduled(db_path) == []
    assert cursor(db_path) == iso(utc(8))


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [("latest", [utc(14)]), ("all", [utc(13), utc(14)]), ("none", [])],
)
async def test_unpause_applies_the_catch_up_policy(
    make_runner: MakeRunner, db_path: Path, catchup: str, expected: list[datetime]
) -> None:
    flow = hourly_flow(catchup=catchup, max_catchup=2)
    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner:
        ctx = context(runner, flow)
        async with scheduling(ctx):
            await cursors.set_paused(runner.store, "etl", True, clock.now())
            await clock.step(4 * 3600 + 300)  # 14:05:00.5, paused: 11..14 not fired
            assert scheduled(db_path) == [iso(utc(10))]
            assert await cursors.set_paused(runner.store, "etl", False, clock.now())
            await clock.step(MAX_WAIT)  # the next pass sees it unpaused
    assert scheduled(db_path) == [iso(utc(10))] + [iso(t) for t in expected]
    assert cursor(db_path) == iso(utc(14))


# --- DST through the loop ---


async def test_a_daily_zone_schedule_fires_once_on_the_autumn_change(
    make_runner: MakeRunner, db_path: Path
) -> None:
    spec: TimeTrigger = cron("30 1 * * *", tz="America/New_York")
    flow = hourly_flow("ny", triggers=[spec])
    # 2026-11-01 01:30 EDT is 05:30Z; 01:30 EST (06:30Z) must not fire again
    clock = BlockingClock(datetime(2026, 11, 1, 5, 0, tzinfo=UTC))
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        for _ in range(6):  # 05:00Z .. 08:00Z in half hours, through both 01:30s
            await clock.step(1800)
    assert scheduled(db_path, "ny") == ["2026-11-01T05:30:00Z"]


async def test_a_pass_plans_ahead_and_commits_at_the_instant(
    make_runner: MakeRunner, db_path: Path
) -> None:
    # 1,000 triggers take ~10 ms to plan: the pass plans LEAD before the instant, so what is
    # left at the instant is the commit
    clock = BlockingClock(utc(10, 0, 3))
    flow = hourly_flow(triggers=[every("10s")])
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow), LEAD):
        assert clock.sleeps == [pytest.approx(7.0 - LEAD)]
        await clock.step(7.0 - LEAD)  # the pass plans 10:00:10 and sleeps the lead
        assert clock.sleeps[-1] == pytest.approx(LEAD)
        assert scheduled(db_path) == [iso(utc(10))]  # nothing committed ahead of time
        await clock.step(LEAD)
        assert scheduled(db_path) == [iso(utc(10)), iso(utc(10, 0, 10))]
    created = peek(db_path, "SELECT created_at FROM runs ORDER BY id")[-1][0]
    assert datetime.fromisoformat(created) == utc(10, 0, 10)  # at the instant, not before


# --- work per pass ---

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def test_a_pass_plans_and_reads_only_the_triggers_that_are_due(
    make_runner: MakeRunner, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,000 hourly schedules 3.6 s apart: the loop wakes for each, and each pass must cost the
    # same as with one schedule (it went over all 1,000 triggers and read all 1,000 cursors)
    n, passes = 1000, 20
    flows = [
        hourly_flow(f"s{i}", triggers=[every("1h", start=EPOCH + timedelta(seconds=i * 3.6))])
        for i in range(n)
    ]
    work = {"planned": 0, "listed": 0, "cursors read": 0}

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            work[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner:
        read = runner.store.read

        async def counting_read(fn: Any, *args: Any, **kwargs: Any) -> Any:
            got = await read(fn, *args, **kwargs)
            if isinstance(got, cursors.ScheduleState):
                work["cursors read"] += len(got.cursors)
            return got

        monkeypatch.setattr(runner.store, "read", counting_read)
        # patched where the loop looks them up
        monkeypatch.setattr(scheduler, "plan_trigger", counted("planned", agenda.plan_trigger))
        monkeypatch.setattr(scheduler, "triggers", counted("listed", agenda.triggers))
        async with scheduling(context(runner, *flows)):
            assert work["planned"] == n  # the start-up pass plans every trigger
            work.update(dict.fromkeys(work, 0))
            fired = len(peek(db_path, "SELECT id FROM runs"))  # checked at the next pass
            for _ in range(passes):
                await clock.step(3.6)  # the next schedule is due: one pass
    # each pass fired its one schedule, on time
    for i in range(1, passes + 1):
        assert scheduled(db_path, f"s{i}") == [iso(utc(10, 0, round(i * 3.6, 1)))]
    assert work["planned"] <= 2 * passes
    assert work["listed"] == 0
    assert work["cursors read"] <= fired + 2 * passes


async def test_a_flow_paused_between_plan_and_commit_is_planned_again_once_unpaused(
    make_runner: MakeRunner, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pass planned 11:00 and the commit found the flow paused: no run, the cursor stayed.
    # Unpaused, the next pass must plan it again from the stored cursor, not wait for 12:00.
    flow = hourly_flow()
    clock = BlockingClock(utc(10, 0, 0.5))
    fire_batch = cursors.fire_batch
    async with make_runner(clock=clock) as runner, scheduling(context(runner, flow)):
        pause = True

        async def paused_meanwhile(store: Any, firings: Any, now: datetime) -> Any:
            if pause and firings:
                await cursors.set_paused(store, "etl", True, now)
            return await fire_batch(store, firings, now)

        monkeypatch.setattr(cursors, "fire_batch", paused_meanwhile)
        await clock.step(3600)  # 11:00:00.5: planned, then paused before the commit
        assert scheduled(db_path) == [iso(utc(10))]
        assert cursor(db_path) == iso(utc(10))
        pause = False
        assert await cursors.set_paused(runner.store, "etl", False, clock.now())
        await clock.step(MAX_WAIT)  # the next pass sees it unpaused
    assert scheduled(db_path) == [iso(utc(10)), iso(utc(11))]
    assert cursor(db_path) == iso(utc(11))
