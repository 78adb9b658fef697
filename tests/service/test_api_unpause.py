"""Unpause through the API wakes the service's scheduler: the flow's missed instants follow its
catch-up policy at once, not at the scheduler's next pass (up to MAX_WAIT later)."""

from __future__ import annotations

import functools

import anyio

from runtime.scheduling.ticker import run_scheduler
from runtime.testing import BlockingClock
from tests.conftest import MakeRunner
from tests.scheduling.test_ticker import hourly_flow, iso, scheduled, utc
from tests.service.api_server import open_api
from tests.service.test_api import post
from tests.waiting import WAIT


async def test_unpause_through_the_api_catches_up_without_waiting_for_the_next_pass(
    make_runner: MakeRunner,
) -> None:
    flow = hourly_flow(catchup="all", max_catchup=5)
    clock = BlockingClock(utc(10, 0, 0.5))
    async with make_runner(clock=clock) as runner, open_api(runner, {"etl": flow}) as api:
        ctx = api.ctx
        # as serve.py starts it: woken by a reload or an unpause
        loop = functools.partial(
            run_scheduler, ctx.store, ctx.clock, lambda: ctx.flows,
            lambda: ctx.schedule_changed, ctx.wake_queue, lead=0.0,
        )  # fmt: skip
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                await tg.start(loop)
                await clock.wait_naps(1)
                status, _, _ = await post(api, "/api/flows/etl/pause")
                assert status == 200
                await clock.step(3 * 3600)  # 13:00:00.5: 11, 12 and 13 are held
                assert scheduled(runner.store.path) == [iso(utc(10))]
                naps = clock.naps
                status, answer, _ = await post(api, "/api/flows/etl/unpause")
                assert answer["changed"] is True
                await clock.wait_naps(naps + 1)  # a pass ran, the clock did not move
                tg.cancel_scope.cancel()
    assert scheduled(runner.store.path) == [iso(utc(h)) for h in (10, 11, 12, 13)]
