"""``RunStarted.scheduled``: the instant a scheduled run was due, on its first start only
(the /metrics schedule lateness); ``None`` for other runs and for a resumed one."""

from __future__ import annotations

from datetime import timedelta

from runtime import Flow
from runtime.engine.events import Event, RunStarted
from runtime.engine.handle import Carry
from runtime.testing import FakeClock
from tests.conftest import MakeRunner


async def noop() -> None:
    """Nothing to do."""


def starts(events: list[Event]) -> list[RunStarted]:
    return [e for e in events if isinstance(e, RunStarted)]


async def test_a_scheduled_run_carries_its_instant_once(
    make_runner: MakeRunner, clock: FakeClock, events: list[Event]
) -> None:
    flow = Flow("nightly")
    flow.task()(noop)
    due = clock.now() - timedelta(minutes=3)
    trigger = {"kind": "schedule", "spec": "cron('0 2 * * *')", "scheduled": due.isoformat()}
    async with make_runner() as runner:
        first = await runner.run(flow, trigger=trigger, logical_date=due)
        await runner.run(flow, logical_date=due)  # manual, same logical date
        # resumed after a restart: an attempt was spent already, it is not late again
        resumed = Carry(attempts={("noop", -1): 1})
        await runner.engine.execute(
            flow, first.id, params={}, logical_date=due, trigger=trigger, carry=resumed
        )
    assert [e.scheduled for e in starts(events)] == [due, None, None]
